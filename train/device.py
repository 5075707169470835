"""Precision choices for CPU and GPU: bf16 autocast only where the hardware really has bf16 arithmetic."""

from __future__ import annotations

import contextlib

import torch

from llmql.train.cpu import cpu_has_bf16


def bf16_supported(device: str = "cpu") -> bool:
    """True where bf16 matmul is native: AVX512-BF16 or AMX on x86, bf16 on Arm, or a GPU that has it."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def resolve_bf16(setting: bool | str | None, device: str = "cpu") -> bool:
    """`True`/`False` force it; `"auto"` or None use bf16 where supported."""
    if setting in (None, "auto"):
        return bf16_supported(device)
    return bool(setting)


def autocast(enabled: bool, device: str = "cpu") -> contextlib.AbstractContextManager:
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
