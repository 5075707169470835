"""The QL cache blobs: self-describing, exact shapes and positions, fp16/int8 errors bounded, scores kept."""

import numpy as np
import pytest

from llmql.connectors.state_blobs import bytes_per_document, pack, unpack
from llmql.train.core.end_states import EndStates


@pytest.fixture
def states():
    rng = np.random.default_rng(0)
    return EndStates(
        rng.normal(size=(3, 4, 2, 8)).astype(np.float32),
        rng.normal(size=(3, 4, 2, 8)).astype(np.float32),
        rng.normal(size=(3, 16)).astype(np.float32),
        np.array([5, 200, 17]),
    )


@pytest.mark.parametrize(("fmt", "tolerance"), [("fp16", 2e-3), ("int8", 3e-2)])
def test_round_trip(states, fmt, tolerance):
    blobs = pack(states, fmt)
    assert len(blobs) == 3 and all(len(b) == bytes_per_document(4, 2, 8, 16, fmt) for b in blobs)
    back = unpack(blobs)
    assert back.positions.tolist() == [5, 200, 17] and back.keys.shape == states.keys.shape
    for name in ("keys", "values", "hidden"):
        np.testing.assert_allclose(getattr(back, name), getattr(states, name), atol=tolerance)


def test_foreign_or_mixed_blobs_are_refused(states):
    with pytest.raises(ValueError, match="not an llmql"):
        unpack([b"\x00" * 64])
    other = EndStates(states.keys[:, :2], states.values[:, :2], states.hidden, states.positions)
    with pytest.raises(ValueError, match="different shapes"):
        unpack(pack(states)[:1] + pack(other)[:1])


def test_int8_cache_keeps_the_ranking(tiny_export):
    from llmql.export.runtime import OnnxQLScorer

    scorer = OnnxQLScorer.from_dir(tiny_export)
    texts = ["kelp kelp lagoon study", "granite ridge models", "amber", "the field data shows new results"]
    exact = scorer.end_states(texts)
    full = scorer.score_states("kelp lagoon", exact)
    approx = scorer.score_states("kelp lagoon", unpack(pack(exact, "int8")))
    np.testing.assert_allclose(approx, full, atol=0.05)
    assert np.argsort(-approx).tolist() == np.argsort(-full).tolist()


@pytest.mark.parametrize("fmt", ["fp16", "int8"])
def test_blobs_are_the_documented_layout(states, fmt):
    """The header and body byte for byte as documented (a blob written by an earlier version reads the same)."""
    import struct

    blob = pack(states, fmt)[1]
    magic, code, position, layers, kv_heads, head_dim, hidden = struct.unpack_from("<2sBxiHHHH", blob)
    assert (magic, code, position, layers, kv_heads, head_dim, hidden) == (
        b"LQ",
        {"fp16": 1, "int8": 2}[fmt],
        200,
        4,
        2,
        8,
        16,
    )
    if fmt == "fp16":
        keys = np.frombuffer(blob, np.float16, 4 * 2 * 8, 16).reshape(4, 2, 8)
        np.testing.assert_array_equal(keys, states.keys[1].astype(np.float16))
    else:
        scale = np.frombuffer(blob, np.float16, 8, 16).astype(np.float32)
        values = np.frombuffer(blob, np.int8, 8 * 8, 32).reshape(8, 8).astype(np.float32)
        np.testing.assert_allclose(values * scale[:, None], states.keys[1].reshape(8, 8), atol=3e-2)


def test_blobs_of_both_formats_unpack_together(states):
    mixed = pack(states, "fp16")[:2] + pack(states, "int8")[2:]
    back = unpack(mixed)
    assert back.positions.tolist() == [5, 200, 17]
    np.testing.assert_allclose(back.keys, states.keys, atol=3e-2)
