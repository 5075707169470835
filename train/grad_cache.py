"""GradCache (Gao et al., 2021): a contrastive step over more in-batch negatives than fit in memory at once.

Gradient accumulation cannot do this: each micro-batch would see only its own negatives. GradCache encodes every
query and passage without building a graph (chunk by chunk), computes the loss and its gradient with respect to
the embeddings, then encodes each chunk again with a graph and back-propagates that chunk's share of the
gradient. The result equals one large-batch step; memory holds one chunk's activations. Dropout (LoRA's) draws
the same masks in both passes because each chunk's random state is replayed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

Encode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # ids, mask [B, L] -> [B, H]


class _RandomState:
    """The CPU and (if any) CUDA generator states at a point, to replay a chunk's dropout masks."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def _chunks(ids: torch.Tensor, mask: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(ids[i : i + size], mask[i : i + size]) for i in range(0, ids.shape[0], size)]


def cached_step(
    encode_queries: Encode,
    encode_passages: Encode,
    queries: tuple[torch.Tensor, torch.Tensor],
    passages: tuple[torch.Tensor, torch.Tensor],
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    chunk: int,
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], contextlib.AbstractContextManager],
) -> torch.Tensor:
    """One GradCache step: gradients accumulate in the parameters as if `loss_of(all queries, all passages)`
    had been back-propagated at once. `backward` runs a backward pass (accelerate's); `no_sync` holds back the
    gradient all-reduce of a multi-process run until the last chunk. Returns the (detached) loss."""
    sides = [(encode_queries, _chunks(*queries, chunk)), (encode_passages, _chunks(*passages, chunk))]
    states: list[list[_RandomState]] = [[], []]
    reps: list[torch.Tensor] = []
    with torch.no_grad():  # pass 1: embeddings only, no graph
        for side, (encode, parts) in enumerate(sides):
            outs = []
            for ids, mask in parts:
                states[side].append(_RandomState(ids.device))
                outs.append(encode(ids, mask))
            reps.append(torch.cat(outs).detach().requires_grad_())
    loss = loss_of(reps[0], reps[1])  # pass 2: the loss and d loss / d embeddings
    loss.backward()
    grads = [r.grad for r in reps]
    last = (1, len(sides[1][1]) - 1)
    for side, (encode, parts) in enumerate(sides):  # pass 3: each chunk again, with its share of the gradient
        offset = 0
        for index, (ids, mask) in enumerate(parts):
            sync = contextlib.nullcontext() if (side, index) == last else no_sync()
            with sync, states[side][index].replay():
                out = encode(ids, mask)
                backward((out * grads[side][offset : offset + out.shape[0]]).sum())
            offset += out.shape[0]
    return loss.detach()
