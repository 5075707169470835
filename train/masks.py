"""Attention masks for query-likelihood learning: the Attention Stop layout.

A QL sequence is `<bos> passage prompt [E] query <eos>` followed by padding. Masks are boolean, shape
[B, 1, L, L], True where row i may attend to column j.
"""

from __future__ import annotations

import torch


def attention_stop_mask(attention_mask: torch.Tensor, end_positions: torch.Tensor) -> torch.Tensor:
    """Attention Stop (paper, stage 1).

    attention_mask: [B, L] 1 for real tokens, 0 for padding (either side).
    end_positions:  [B] index of each example's own [E] token.
    Rules: rows i <= e are causal (j <= i); rows i > e see only e <= j <= i; padding keys are never seen.
    A padding row sees only itself, so no row is fully masked (SDPA would return NaN for it).
    """
    _, length = attention_mask.shape
    idx = torch.arange(length, device=attention_mask.device)
    i = idx.view(1, length, 1)
    j = idx.view(1, 1, length)
    e = end_positions.view(-1, 1, 1)
    causal = j <= i
    stop = (i <= e) | (j >= e)
    real = attention_mask.bool()
    allowed = causal & stop & real.unsqueeze(1) & real.unsqueeze(2)
    pad_self = ~real.unsqueeze(2) & (i == j)  # [B, L, L]
    return (allowed | pad_self).unsqueeze(1)


def causal_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Ordinary causal attention with padding, in the same [B, 1, L, L] form (the `--no-attention-stop` ablation)."""
    end_positions = torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
    return attention_stop_mask(attention_mask, end_positions)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over real tokens whatever the padding side (RoPE positions must skip left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
