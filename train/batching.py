"""Padding and length-sorted batching as numpy, shared by the torch and the ONNX runtimes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


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


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
