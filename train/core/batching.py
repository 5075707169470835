"""Padding and length-sorted batching as numpy, shared by the torch and the ONNX runtimes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: Iterable[T], prepare: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """(item, prepare(item)) in order, each prepared on a background thread while the caller works on the one
    before: padding (and, on a GPU, pinning and the host-to-device copy) overlaps the model's call."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmql-prefetch") as pool:
        pending = None
        for item in items:
            future = pool.submit(prepare, item)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (item, future)
        if pending is not None:
            yield pending[0], pending[1].result()


def run_batches(
    batches: Iterable[list[int]],
    prepare: Callable[[list[int]], R],
    launch: Callable[[R], Callable[[], T]],
) -> Iterator[tuple[list[int], T]]:
    """(batch, result) in order: each batch is prepared (padded, copied to its device) on a background thread
    ahead of the model, launched, and its result collected only once the next batch has been launched, so a GPU
    never idles while the host reads a result back or pads the next batch. `launch` returns a call that gives
    the result (on a GPU, waiting for its copy to the host); on the CPU it is simply the computed value."""
    batches = list(batches)
    if len(batches) == 1:  # nothing to overlap (a query, a small request): no thread
        yield batches[0], launch(prepare(batches[0]))()
        return
    pending: tuple[list[int], Callable[[], T]] | None = None
    for index, inputs in prefetched(batches, prepare):
        collect = launch(inputs)
        if pending is not None:
            yield pending[0], pending[1]()
        pending = (index, collect)
    if pending is not None:
        yield pending[0], pending[1]()


def pad(rows: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Rows of ids -> (input_ids [B, L] int64, attention_mask [B, L] int64), padded on `side`."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', not {side!r}")
    length = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        n = len(row)
        if n == 0:
            continue
        sl = slice(0, n) if side == "right" else slice(length - n, length)
        ids[i, sl] = row
        mask[i, sl] = 1
    return ids, mask


def length_batches(
    lengths: Sequence[int], batch_size: int, max_padded_tokens: int | None = None
) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little compute goes to padding.

    A batch holds at most `batch_size` rows and, with `max_padded_tokens`, at most that many padded tokens (rows x its
    longest row): short texts then go in large batches and long ones in small, bounding memory whatever the mix.
    A single row longer than `max_padded_tokens` is a batch of its own.
    """
    if batch_size < 1 or (max_padded_tokens is not None and max_padded_tokens < 1):
        raise ValueError(f"batch_size and max_padded_tokens must be positive, got {batch_size} and {max_padded_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]  # sorted: the first row is the longest
        if batch and (
            len(batch) == batch_size or (max_padded_tokens and (len(batch) + 1) * longest > max_padded_tokens)
        ):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
