"""How training runs attention, and which way each device takes.

Three routes compute the same function (pinned by tests): `dense`, the mask predicate of `llmql.train.masks`
materialised as a [B, 1, L, L] tensor for SDPA; `flex`, the same predicate as a FlexAttention BlockMask, whose
fused kernel skips the blocks no token may attend (packed rows then cost about their tokens, not their square);
and `two-pass`, Attention Stop as a causal pass over the documents and the queries against [E]'s cached states
(one example per right-padded row). Packing puts several examples in a row, each with its own positions and
masks; it pays where the kernel skips masked blocks, so it is on with `flex`.
"""

from __future__ import annotations

import torch
from torch import nn

from llmql.train.modeling import _inner, decoder_of

ROUTES = ("auto", "dense", "flex", "two-pass")
# The route `auto` takes: bench.train_speed on an H200 (BENCHMARKS.md, "Training on a GPU", 2026-12-04; stage 1,
# 64 sequences, bf16 autocast) measured the dense mask at 91.4k tokens/s, FlexAttention on packed rows 84.1k
# (0.92x), the two passes 39.9k (0.44x), the dense mask on packed rows 61.2k; on a CPU SDPA runs the dense mask at
# full speed (the two passes 0.90x there) and FlexAttention has no backward.
CUDA_ROUTE = "dense"
CPU_ROUTE = "dense"


def attention_route(asked: str, device: str) -> str:
    """The route to train with: as asked, or for `auto` the one measured fastest on this kind of device."""
    if asked not in ROUTES:
        raise ValueError(f"attention route {asked!r}: choose one of {', '.join(ROUTES)}")
    if asked != "auto":
        return asked
    return CUDA_ROUTE if device.startswith("cuda") else CPU_ROUTE


def packs(route: str, asked: bool | None) -> bool:
    """Whether batches are packed: as asked, else with the route that skips masked blocks."""
    return route == "flex" if asked is None else asked


def set_route(lm: nn.Module, route: str) -> None:
    """Point the model's attention at the route's kernel (FlexAttention for `flex`, else SDPA)."""
    wanted = "flex_attention" if route == "flex" else "sdpa"
    inner = _inner(lm)
    if inner.config._attn_implementation != wanted:
        inner.set_attn_implementation(wanted)


PACK_TOKENS = 4096  # tokens a packed row holds (an example longer than that is a row of its own)


def prepare(lm: nn.Module, asked: str, pack: bool | None, compile: bool, device: str) -> tuple[str, int | None]:
    """Set the model up for training on `device`: its attention route (returned, with the packed row length or
    None), TF32 on a GPU, and torch.compile of the decoder when asked."""

    route = attention_route(asked, device)
    set_route(lm, route)
    fast_math(device)
    if compile:
        decoder_of(lm).compile(dynamic=True)
    return route, PACK_TOKENS if packs(route, pack) else None


def fast_math(device: str) -> None:
    """On a GPU, fp32 matrix products on the tensor cores (TF32): what remains fp32 under bf16 autocast, and
    all of an fp32 run."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
