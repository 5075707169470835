"""The one device policy: which device a model runs on, and in which precision.

`resolve_device` turns what a user asked for (`auto`, `cpu`, `cuda`, `cuda:N`) into a device, once, before
anything is read or written; under torchrun / accelerate, `cuda` and `auto` take the process's own LOCAL_RANK
GPU. bf16 is used only where the hardware has bf16 arithmetic (a GPU that has it; AVX512-BF16, AMX or Arm bf16
on a CPU). Torch is imported only when a GPU could be involved, so the ONNX path on a CPU stays torch-free.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmql.train.core.cpu import cpu_has_bf16
from llmql.train.core.errors import LLMQLError

if TYPE_CHECKING:
    import numpy as np

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
PIN_BYTES = 1 << 20  # copies to or from a GPU at least this large go through pinned memory, without blocking


class DeviceError(LLMQLError):
    """A device that was asked for is not on this machine, or is not a device name."""


def quiet_accelerator_libraries() -> None:
    """Set before transformers is first imported: it would import JAX when installed, and JAX reserves most of
    a GPU's memory at start (105 of an H200's 140 GiB were gone before training began). Users can override."""
    os.environ.setdefault("USE_FLAX", "0")  # transformers' switch for JAX/Flax
    os.environ.setdefault("USE_JAX", "0")
    os.environ.setdefault("USE_TF", "0")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def local_rank() -> int:
    """This process's rank on its machine under torchrun / accelerate (0 when launched alone)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def cuda_device_count() -> int:
    """CUDA devices torch can use here; 0 without torch or without an NVIDIA device node (then torch, slow to
    import, is not imported just to learn that)."""
    if sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*"):
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(spec: str | None = "auto", count: int | None = None) -> str:
    """'auto' -> this process's GPU if there is one, else 'cpu'; 'cuda' -> this process's GPU or an error;
    'cuda:N' -> that GPU or an error; 'cpu' -> 'cpu'. `count` (CUDA devices) is for tests."""
    name = (spec or "auto").strip().lower()
    if name == "cpu":
        return "cpu"
    if name not in ("auto", "cuda") and not re.fullmatch(r"cuda:\d+", name):
        raise DeviceError(f"device {spec!r}: choose {DEVICE_CHOICES}")
    count = cuda_device_count() if count is None else count
    if name == "auto":
        return f"cuda:{local_rank() % count}" if count else "cpu"
    if count == 0:
        raise DeviceError(f"device {spec!r}: no CUDA device is available on this machine (use --device cpu or auto)")
    index = local_rank() % count if name == "cuda" else int(name.split(":")[1])
    if index >= count:
        raise DeviceError(f"device {spec!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return f"cuda:{index}"


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def bf16_supported(device: str = "cpu") -> bool:
    """True where bf16 matmul is native: AVX512-BF16 or AMX on x86, bf16 on Arm, or a GPU that has it."""
    if is_cuda(device):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def resolve_bf16(setting: bool | str | None, device: str = "cpu") -> bool:
    """`True`/`False` force it; `"auto"` or None use bf16 where supported."""
    if setting in (None, "auto"):
        return bf16_supported(device)
    return bool(setting)


@dataclass(frozen=True)
class BatchSizes:
    """How much one step of bulk encoding takes on a device (a sync's defaults)."""

    documents: int  # documents a write (and a committed step of progress)
    rows: int  # rows a model call, at most
    padded_tokens: int  # padded tokens a model call, at most (rows x the longest row)


CPU_BATCHES = BatchSizes(64, 32, 8192)


def batch_sizes(device: str, hidden: int) -> BatchSizes:
    """The CPU's sizes (measured there), or on a GPU a token budget from its free memory: about a kilobyte of
    activations per hidden unit a token leaves the rest of the card free (SmolLM2-135M on an H200: the cap of
    131,072 tokens, 512 rows of 256 tokens)."""
    if not is_cuda(device):
        return CPU_BATCHES
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    tokens = int(min(131_072, max(8192, free // (hidden * 1024))))
    return BatchSizes(documents=2048, rows=1024, padded_tokens=tokens)


def device_weights(model, bf16: bool, device: str):
    """(model on `device`, whether to run it under bf16 autocast). On a GPU that has bf16 the weights are cast
    to bf16 (no autocast needed); on a CPU they stay fp32 and autocast supplies bf16 where the CPU has it."""
    import torch

    model = model.to(device)
    if bf16 and is_cuda(device):
        return model.to(torch.bfloat16), False
    return model, bf16


def autocast(enabled: bool, device: str = "cpu") -> contextlib.AbstractContextManager:
    import torch

    kind = "cuda" if is_cuda(device) else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def to_device(array, device: str):
    """numpy -> a torch tensor on `device`; to a GPU through pinned memory without blocking, so that a copy made
    on a prefetch thread overlaps the model's work on the previous batch (same stream: ordered before it)."""
    import numpy as np
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if not is_cuda(device):
        return tensor
    if tensor.nbytes < PIN_BYTES:  # a small copy costs less than pinning its pages
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_host_later(tensor) -> Callable[[], np.ndarray]:
    """Start copying a device tensor to the host and return the call that gives it as numpy: on a GPU the copy
    goes into pinned memory behind the work already queued, so the caller can queue the next batch first."""
    import torch

    if not tensor.is_cuda or tensor.nbytes < PIN_BYTES:  # small results: one plain copy
        array = tensor.cpu().numpy()
        return lambda: array
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record()

    def collect() -> np.ndarray:
        done.synchronize()
        return host.numpy()

    return collect
