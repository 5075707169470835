"""Last-token pooling, the one implementation used by training, export and search."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] -> [B]: index of each row's last real token, for left or right padding alike.

    The argmax runs on float32 (exact for any realistic length): onnxruntime 1.16.3, which OpenSearch
    ml-commons ships, has no int64 ArgMax kernel.
    """
    length = attention_mask.shape[-1]
    positions = torch.arange(length, device=attention_mask.device, dtype=torch.float32).expand(attention_mask.shape)
    return (positions * attention_mask.to(torch.float32)).argmax(dim=-1)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """hidden [B, L, H], attention_mask [B, L] -> [B, H], the state of the final [E] token, L2-normalised."""
    index = last_token_index(attention_mask)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    return F.normalize(pooled.float(), p=2, dim=-1) if normalize else pooled


def pool_at(hidden: torch.Tensor, last: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """hidden [B, L, H] of packed rows, last [N, 2] (row, column of each text's [E]) -> [N, H], L2-normalised."""
    pooled = hidden[last[:, 0], last[:, 1]]
    return F.normalize(pooled.float(), p=2, dim=-1) if normalize else pooled
