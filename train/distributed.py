"""The process group under torchrun or accelerate, and cross-process gathering for contrastive training."""

from __future__ import annotations

import torch
import torch.distributed as dist


def process_state():
    """accelerate's process state, on the CPU when there is no GPU. Plain `PartialState()` on a CPU host ignores
    torchrun and reports one process, so `main_process_first` would let every rank write shared files at once."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[P, H] per process -> ([world * P, H], offset of this process's rows). Gradients flow back to every
    process's own rows, so each query is scored against every process's passages as negatives."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(local.contiguous())
    return torch.cat(parts, dim=0), dist.get_rank() * local.shape[0]
