"""Attention masks for query-likelihood learning: the Attention Stop layout, as one predicate.

A QL sequence is `<bos> passage prompt [E] query <eos>`. Rows may be padded, or packed with several examples
each (`examples`: each token's example in its row, -1 for padding). `attention_stop_mod` is a FlexAttention
`mask_mod` (b, h, q, kv) -> may q attend to kv; `dense` materialises any such predicate as the boolean
[B, 1, L, L] tensor SDPA takes, and `block_mask` compresses it into FlexAttention's BlockMask, so that the dense
and the fused routes compute exactly the same function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def attention_stop_mod(examples: torch.Tensor, ends: torch.Tensor, stop: bool = True) -> MaskMod:
    """Attention Stop (paper, stage 1) over padded or packed rows.

    examples: [B, L] each token's example within its row (-1: padding); ends: [B, L] the row index of that
    example's [E]. Rules: a token sees only its own example's tokens, causally; a token after its [E] sees only
    [E] and the query tokens before it (with `stop`; without it, plain causal attention); padding is never seen,
    and a padding token sees itself only (no fully masked row: SDPA would return NaN for it).
    """

    def mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        example = examples[b, q]
        same = (example == examples[b, kv]) & (example >= 0) & (kv <= q)
        if stop:
            end = ends[b, q]
            same = same & ((q <= end) | (kv >= end))
        return same | ((example < 0) & (q == kv))

    return mod


def dense(mod: MaskMod, batch: int, length: int, device: torch.device | str) -> torch.Tensor:
    """The predicate as a boolean [B, 1, L, L] tensor (True: may attend)."""
    idx = torch.arange(length, device=device)
    b = torch.arange(batch, device=device).view(-1, 1, 1)
    return mod(b, torch.zeros((), dtype=torch.long, device=device), idx.view(1, -1, 1), idx.view(1, 1, -1)).unsqueeze(1)


def block_mask(mod: MaskMod, batch: int, length: int, device: torch.device | str):
    """The predicate as FlexAttention's BlockMask (blocks no token may attend are skipped, not computed)."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mod, batch, None, length, length, device=device, _compile=str(device).startswith("cuda"))


def row_examples(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] -> each token's example for one example per row: 0 for real tokens, -1 for padding."""
    return torch.where(attention_mask.bool(), 0, -1)


def attention_stop_mask(attention_mask: torch.Tensor, end_positions: torch.Tensor) -> torch.Tensor:
    """Attention Stop for one example per row, left or right padded: end_positions [B] is each row's [E]."""
    batch, length = attention_mask.shape
    ends = end_positions.view(-1, 1).expand(batch, length)
    return dense(attention_stop_mod(row_examples(attention_mask), ends), batch, length, attention_mask.device)


def causal_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Ordinary causal attention with padding, in the same [B, 1, L, L] form (the `--no-attention-stop` ablation)."""
    batch, length = attention_mask.shape
    ends = torch.zeros((batch, length), dtype=torch.long, device=attention_mask.device)
    return dense(
        attention_stop_mod(row_examples(attention_mask), ends, stop=False), batch, length, attention_mask.device
    )


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over real tokens whatever the padding side (RoPE positions must skip left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
