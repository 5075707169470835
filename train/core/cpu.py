"""CPU features, read without importing torch (the ONNX runtime path must stay torch-free)."""

from __future__ import annotations

import functools
import os
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


def usable_cores() -> int:
    """The cores this process may run on: its affinity (taskset, a container's cpuset), not the machine's count,
    so that a process pinned to one core does not start a thread per core of the machine on it."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_threads() -> int:
    """Threads one process's model calls may use: $LLMQL_THREADS, else the usable cores shared among the
    processes a launcher started on this machine (LOCAL_WORLD_SIZE), so that N shard processes do not
    oversubscribe them."""
    if os.environ.get("LLMQL_THREADS"):
        return max(1, int(os.environ["LLMQL_THREADS"]))
    per_machine = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, usable_cores() // per_machine)
