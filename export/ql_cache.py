"""Compact storage of each document's [E] states, so QL re-ranking at query time runs only the query tokens.

One self-describing blob per document: a 16-byte header (magic, format, position, shape) and the keys, values
and final hidden state in fp16, or in int8 with one fp16 scale per head vector (about half the size).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from llmql.train.end_states import EndStateArrays

MAGIC = b"LQ"
_HEADER = struct.Struct("<2sBxiHHHH")  # magic, format, pad, position, layers, kv_heads, head_dim, hidden
FORMATS = {"fp16": 1, "int8": 2}


def _quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., d] float -> int8 values and one fp16 scale per row (symmetric)."""
    scale = np.abs(rows).max(axis=-1, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float16)
    values = np.clip(np.rint(rows / scale.astype(np.float32)), -127, 127).astype(np.int8)
    return values, scale


def pack(states: EndStateArrays, fmt: str = "fp16") -> list[bytes]:
    """One blob per document."""
    code = FORMATS[fmt]
    _, layers, kv_heads, head_dim = states.keys.shape
    hidden = states.hidden.shape[1]
    out = []
    for i in range(len(states)):
        header = _HEADER.pack(MAGIC, code, int(states.positions[i]), layers, kv_heads, head_dim, hidden)
        parts = (states.keys[i], states.values[i], states.hidden[i][None, :])
        if fmt == "fp16":
            body = b"".join(p.astype(np.float16).tobytes() for p in parts)
        else:
            body = b""
            for p in parts:
                values, scale = _quantize(p.astype(np.float32))
                body += scale.tobytes() + values.tobytes()
        out.append(header + body)
    return out


def unpack(blobs: Sequence[bytes]) -> EndStateArrays:
    """Blobs (all from the same model) -> float32 arrays ready for `OnnxQLScorer.score_states`."""
    keys, values, hidden, positions = [], [], [], []
    shape = None
    for blob in blobs:
        magic, code, position, layers, kv_heads, head_dim, size = _HEADER.unpack_from(blob)
        if magic != MAGIC or code not in FORMATS.values():
            raise ValueError("not an llmql QL-cache blob")
        if shape is None:
            shape = (layers, kv_heads, head_dim, size)
        elif shape != (layers, kv_heads, head_dim, size):
            raise ValueError(f"QL-cache blobs of different shapes: {shape} and {(layers, kv_heads, head_dim, size)}")
        offset = _HEADER.size
        arrays = []
        for rows, dim in ((layers * kv_heads, head_dim), (layers * kv_heads, head_dim), (1, size)):
            if code == 1:
                n = rows * dim * 2
                arrays.append(np.frombuffer(blob, np.float16, rows * dim, offset).reshape(rows, dim))
                offset += n
            else:
                scale = np.frombuffer(blob, np.float16, rows, offset).reshape(rows, 1)
                offset += rows * 2
                vals = np.frombuffer(blob, np.int8, rows * dim, offset).reshape(rows, dim)
                offset += rows * dim
                arrays.append(vals.astype(np.float32) * scale.astype(np.float32))
        keys.append(arrays[0].reshape(layers, kv_heads, head_dim))
        values.append(arrays[1].reshape(layers, kv_heads, head_dim))
        hidden.append(arrays[2].reshape(size))
        positions.append(position)
    return EndStateArrays(
        np.stack(keys).astype(np.float32),
        np.stack(values).astype(np.float32),
        np.stack(hidden).astype(np.float32),
        np.asarray(positions, dtype=np.int64),
    )


def bytes_per_document(layers: int, kv_heads: int, head_dim: int, hidden: int, fmt: str = "fp16") -> int:
    n = 2 * layers * kv_heads * head_dim + hidden
    if fmt == "fp16":
        return _HEADER.size + 2 * n
    return _HEADER.size + n + 2 * (2 * layers * kv_heads + 1)
