"""CPU features, read without importing torch (the ONNX runtime path must stay torch-free)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Native bf16 matrix arithmetic: AVX512-BF16 or AMX on x86, bf16 on Arm."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
