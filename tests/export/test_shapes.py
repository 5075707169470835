"""Exported graphs at shapes their trace never saw: the QL query graph beyond the logit chunk a trace would freeze,
the export's own shape checks, and what they record."""

import numpy as np
import pytest
import torch

from llmql.export.convert import ExportConfig, export_model
from llmql.export.manifest import read_manifest
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.export.shape_checks import ShapeError
from llmql.train.encoder import Encoder
from llmql.train.losses import target_logprobs
from llmql.train.ql_scorer import QLScorer
from tests.conftest import build_tiny_model

SMOLLM2_VOCAB = 49_152  # the real model's LM head: 2^26 logits a call hold 1,365 candidate x token rows
QUERY = " ".join(["kelp lagoon granite ridge amber study"] * 6)  # 30+ tokens with the toy tokenizer


@pytest.fixture(scope="module")
def wide_vocab(tmp_path_factory):
    """A tiny Llama whose LM head is as wide as SmolLM2's, exported with the QL scorer."""
    root = tmp_path_factory.mktemp("wide")
    model = build_tiny_model(root / "model", "llama", vocab_size=SMOLLM2_VOCAB)
    return model, export_model(ExportConfig(model=str(model), out=str(root / "export"), ql_scorer=True))


def test_ql_query_graph_answers_past_the_rows_a_trace_would_freeze(wide_vocab):
    """64 candidates x a 30+ token query are over 1,365 rows: the defect that broke `tune` and every re-rank."""
    model, export = wide_vocab
    onnx_scorer = OnnxQLScorer.from_dir(export)
    torch_scorer = QLScorer.from_pretrained(model, bf16=False)
    assert len(onnx_scorer.tokenizer.ql_queries([QUERY])[0]) >= 30
    passages = [f"kelp lagoon study {i} " + "granite " * (i % 7) for i in range(64)]
    states = onnx_scorer.end_states(passages)
    full = torch_scorer.score(QUERY, passages)
    np.testing.assert_allclose(onnx_scorer.score_states(QUERY, states), full, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(onnx_scorer.score_states(QUERY, states, batch_size=64), full, rtol=1e-5, atol=1e-4)
    # the graph itself, called with all 64 candidates at once (no runtime bound in between)
    q = np.asarray(onnx_scorer.tokenizer.ql_queries([QUERY])[0], dtype=np.int64)
    whole = onnx_scorer._query_logprobs(np.broadcast_to(q, (64, len(q))).copy(), states).sum(axis=1)
    np.testing.assert_allclose(whole, full, rtol=1e-5, atol=1e-4)


def test_the_torch_scorer_bounds_its_calls_and_scores_the_same(wide_vocab, monkeypatch):
    import llmql.train.core.ql_base as ql_base

    model, _ = wide_vocab
    scorer = QLScorer.from_pretrained(model, bf16=False)
    passages = [f"amber study {i}" for i in range(10)]
    states = scorer.end_states(passages)
    whole = scorer.score_states(QUERY, states)
    monkeypatch.setattr(ql_base, "LOGITS_AT_ONCE", 3 * 40 * SMOLLM2_VOCAB)  # 3 candidates a call
    np.testing.assert_allclose(scorer.score_states(QUERY, states), whole, atol=1e-5)


def test_the_manifest_records_the_shapes_each_graph_was_checked_at(wide_vocab):
    _, export = wide_vocab
    shapes = read_manifest(export)["validated_shapes"]
    assert set(shapes) == {"encoder.onnx", "ql_document.onnx", "ql_query.onnx"}
    for graph in ("encoder.onnx", "ql_document.onnx"):
        rows = [case["rows"] for case in shapes[graph]]
        assert 1 in rows and max(rows) >= 8, graph  # one row, and batches far past the trace's 2
        assert min(case["worst_cosine"] for case in shapes[graph]) >= 0.9999
    query = shapes["ql_query.onnx"]
    assert max(c["rows"] * c["tokens"] for c in query) > 2**26 // SMOLLM2_VOCAB
    assert max(c["tokens"] for c in query) == 201  # the longest query the configuration allows, and its EOS
    assert max(c["max_rel_logprob_diff"] for c in query) <= 1e-4


def _chunked_logprobs(lm, query_ids, states):
    """The defect of 6f9050f: Python chunks over a traced size (here 16 candidate x token rows at a time)."""
    from llmql.train.modeling import logits_from_hidden, query_hidden_from_states

    batch, length = query_ids.shape
    hidden = torch.cat([states.hidden.unsqueeze(1), query_hidden_from_states(lm, query_ids[:, :-1], states)], 1)
    hidden, targets = hidden.reshape(batch * length, -1), query_ids.reshape(-1)
    parts = [
        target_logprobs(logits_from_hidden(lm, hidden[i : i + 16]), targets[i : i + 16])
        for i in range(0, len(targets), 16)
    ]
    return torch.cat(parts).view(batch, length)


def test_export_refuses_a_graph_frozen_at_its_trace_shape(tiny_llama, tmp_path, monkeypatch):
    import llmql.export.graphs as graphs

    monkeypatch.setattr(graphs, "query_logprobs_from_states", _chunked_logprobs)
    out = tmp_path / "export"
    with pytest.raises(ShapeError, match=r"ql_query\.onnx: fails at .* a shape its trace did not see"):
        export_model(ExportConfig(model=str(tiny_llama), out=str(out), ql_scorer=True))
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written, no partial folder


def test_encoder_graph_equals_pytorch_on_a_large_left_padded_batch(wide_vocab):
    model, export = wide_vocab
    onnx_encoder = OnnxEncoder.from_dir(export)
    texts = [f"granite ridge {'kelp ' * (i % 13)}" for i in range(70)]
    rows = onnx_encoder.tokenizer.passages([""] * len(texts), texts)
    vectors = onnx_encoder.encode_ids(rows, batch_size=70, side="left")
    reference = Encoder.from_pretrained(model, bf16=False).encode_passages(texts)
    assert (vectors * reference).sum(axis=1).min() >= 0.9999
