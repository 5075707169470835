"""Compact storage of each document's [E] states, so QL re-ranking at query time runs only the query tokens.

One self-describing blob per document: a 16-byte header (magic, format, position, shape) and the keys, values
and final hidden state in fp16, or in int8 with one fp16 scale per head vector (about half the size). Packing
and unpacking work on all documents at once (numpy views of one buffer, no per-document loop over arrays), so a
query's top 1,000 candidates unpack in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmql.train.core.end_states import EndStates

MAGIC = b"LQ"
FORMATS = {"fp16": 1, "int8": 2}
# magic, format, pad, position, layers, kv_heads, head_dim, hidden: 16 bytes, little-endian
_HEADER = np.dtype(
    [("magic", "S2"), ("format", "u1"), ("pad", "u1"), ("position", "<i4")]
    + [(name, "<u2") for name in ("layers", "kv_heads", "head_dim", "hidden")]
)
_SHAPE = ("layers", "kv_heads", "head_dim", "hidden")


def _quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., d] float -> int8 values and one fp16 scale per row (symmetric)."""
    scale = np.abs(rows).max(axis=-1, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float16)
    values = np.clip(np.rint(rows / scale.astype(np.float32)), -127, 127).astype(np.int8)
    return values, scale


def _as_bytes(array: np.ndarray, n: int) -> np.ndarray:
    """[N, ...] -> [N, bytes] uint8, one row per document."""
    return np.ascontiguousarray(array).view(np.uint8).reshape(n, -1)


def pack(states: EndStates, fmt: str = "fp16") -> list[bytes]:
    """One blob per document."""
    code = FORMATS[fmt]
    n, layers, kv_heads, head_dim = states.keys.shape
    header = np.zeros(n, dtype=_HEADER)
    header["magic"], header["format"], header["position"] = MAGIC, code, states.positions
    for name, size in zip(_SHAPE, (layers, kv_heads, head_dim, states.hidden.shape[1]), strict=True):
        header[name] = size
    parts = (
        states.keys.reshape(n, layers * kv_heads, head_dim),
        states.values.reshape(n, layers * kv_heads, head_dim),
        states.hidden.reshape(n, 1, -1),
    )
    columns = [_as_bytes(header, n)]
    for part in parts:
        if fmt == "fp16":
            columns.append(_as_bytes(part.astype(np.float16), n))
        else:
            values, scale = _quantize(part.astype(np.float32))
            columns += [_as_bytes(scale, n), _as_bytes(values, n)]
    return [row.tobytes() for row in np.concatenate(columns, axis=1)]


def unpack(blobs: Sequence[bytes]) -> EndStates:
    """Blobs (all from the same model) -> arrays ready for `score_states`: float16 from an fp16 cache (the
    scorers cast to their own precision), float32 from an int8 one (dequantised)."""
    if not blobs:
        raise ValueError("no QL-cache blobs")
    by_size: dict[int, list[int]] = {}
    for i, blob in enumerate(blobs):
        by_size.setdefault(len(blob), []).append(i)
    if len(by_size) == 1:
        return _unpack_alike(blobs)
    groups = [(index, _unpack_alike([blobs[i] for i in index])) for index in by_size.values()]
    shapes = {g.keys.shape[1:] + g.hidden.shape[1:] for _, g in groups}
    if len(shapes) > 1:
        raise ValueError(f"QL-cache blobs of different shapes: {sorted(shapes)}")
    first = groups[0][1]
    out = EndStates(
        *(np.zeros((len(blobs), *getattr(first, f).shape[1:]), np.float32) for f in ("keys", "values", "hidden")),
        np.zeros(len(blobs), np.int64),
    )
    for index, group in groups:
        for name in ("keys", "values", "hidden", "positions"):
            getattr(out, name)[index] = getattr(group, name)
    return out


def _unpack_alike(blobs: Sequence[bytes]) -> EndStates:
    """Blobs of one length (one format and shape, unless the headers say otherwise) in one buffer."""
    n = len(blobs)
    buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(n, -1)
    if buffer.shape[1] < _HEADER.itemsize:
        raise ValueError("not an llmql QL-cache blob")
    header = np.ascontiguousarray(buffer[:, : _HEADER.itemsize]).view(_HEADER).reshape(n)
    if (header["magic"] != MAGIC).any() or not np.isin(header["format"], list(FORMATS.values())).all():
        raise ValueError("not an llmql QL-cache blob")
    shapes = _shapes(header)
    if len(shapes) > 1:
        raise ValueError(f"QL-cache blobs of different shapes: {sorted(shapes)}")
    (layers, kv_heads, head_dim, hidden), code = shapes.pop(), int(header["format"][0])
    if (header["format"] != code).any():
        raise ValueError("QL-cache blobs of one length but different formats")
    body, offset, arrays = buffer[:, _HEADER.itemsize :], 0, []
    for rows, dim in ((layers * kv_heads, head_dim), (layers * kv_heads, head_dim), (1, hidden)):
        if code == FORMATS["fp16"]:
            width = rows * dim * 2
            arrays.append(np.ascontiguousarray(body[:, offset : offset + width]).view(np.float16).reshape(n, rows, dim))
        else:
            width = rows * 2 + rows * dim
            scale = np.ascontiguousarray(body[:, offset : offset + rows * 2]).view(np.float16).reshape(n, rows, 1)
            values = body[:, offset + rows * 2 : offset + width].view(np.int8).reshape(n, rows, dim)
            arrays.append(values.astype(np.float32) * scale.astype(np.float32))
        offset += width
    if offset != body.shape[1]:
        raise ValueError("QL-cache blob of the wrong length for its header")
    return EndStates(
        arrays[0].reshape(n, layers, kv_heads, head_dim),
        arrays[1].reshape(n, layers, kv_heads, head_dim),
        arrays[2].reshape(n, hidden),
        header["position"].astype(np.int64),
    )


def _shapes(header: np.ndarray) -> set[tuple[int, ...]]:
    stacked = np.stack([header[name].astype(np.int64) for name in _SHAPE], axis=1)
    return {tuple(int(x) for x in row) for row in np.unique(stacked, axis=0)}


def bytes_per_document(layers: int, kv_heads: int, head_dim: int, hidden: int, fmt: str = "fp16") -> int:
    n = 2 * layers * kv_heads * head_dim + hidden
    if fmt == "fp16":
        return _HEADER.itemsize + 2 * n
    return _HEADER.itemsize + n + 2 * (2 * layers * kv_heads + 1)
