"""The hybrid searcher end to end on the embedded engine and the real servers."""

import numpy as np
import pytest

from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.plugin.rerank import QLReranker
from llmql.plugin.search import HybridSearcher, SearchConfig


def test_hybrid_search_with_ql_rerank(synced, ql_export):
    backend, index = synced
    encoder, scorer = OnnxEncoder.from_dir(ql_export), OnnxQLScorer.from_dir(ql_export)
    bm25 = HybridSearcher(backend, index, config=SearchConfig(mode="bm25")).search("kelp study", k=5)
    assert bm25.hits[0].id == "d10"  # the only document about kelp
    dense = HybridSearcher(backend, index, encoder, config=SearchConfig(mode="dense")).search("kelp", k=24)
    assert len(dense.hits) == 24 and all(-1.0 <= h.score <= 1.0 for h in dense.hits)
    hybrid = HybridSearcher(backend, index, encoder, scorer, SearchConfig(rerank_depth=10, ql_weight=1.0))
    result = hybrid.search("kelp study", k=10)
    assert result.ql_path == "cached"
    assert set(result.timings_ms) == {"bm25", "encode", "knn", "fusion", "ql_rerank"}
    head = [h for h in result.hits if "ql" in h.stages]
    assert len(head) == 10
    ql_scores = [h.stages["ql"] for h in head]
    assert ql_scores == sorted(ql_scores, reverse=True)  # QL alone orders the re-ranked head
    direct = scorer.score("kelp study", [h.text for h in head], [h.title for h in head])
    np.testing.assert_allclose(ql_scores, direct, atol=5e-3)  # fp16 cache vs fresh fp32 states


def test_a_filter_on_a_field_the_index_lacks_is_refused(synced, ql_export):
    backend, index = synced
    encoder = OnnxEncoder.from_dir(ql_export)
    # the toy corpus has no metadata: a filter on a field would silently match nothing (or, under "not", all)
    with pytest.raises(ValueError, match=r"filter on \['year'\] which the index does not hold"):
        HybridSearcher(backend, index, encoder).search("kelp", k=5, filter={"year": 2020})


def test_cached_and_full_ql_scores_agree(synced, ql_export):
    backend, index = synced
    scorer = OnnxQLScorer.from_dir(ql_export)
    ids = [f"d{i}" for i in range(24)]
    cached = QLReranker(scorer, backend, index, path="cached").rerank("granite ridge data", ids)
    full = QLReranker(scorer, backend, index, path="full").rerank("granite ridge data", ids)
    assert cached.path == "cached" and full.path == "full" and cached.cached == 24
    # fp16 storage of the states is the only difference from the full forward pass
    np.testing.assert_allclose([cached.scores[i] for i in ids], [full.scores[i] for i in ids], atol=5e-3)


def test_cached_equals_full_forward_within_1e4_in_fp32(ql_export, tiny_llama):
    """The fast path itself (no fp16 storage) equals the PyTorch full forward within 1e-4."""
    from llmql.train.ql_scorer import QLScorer

    onnx_scorer, torch_scorer = OnnxQLScorer.from_dir(ql_export), QLScorer.from_pretrained(tiny_llama, bf16=False)
    texts = ["kelp kelp lagoon study", "granite ridge models", "amber", "the field data shows new results"]
    states = onnx_scorer.end_states(texts)
    for query in ("kelp", "granite ridge data results"):
        np.testing.assert_allclose(onnx_scorer.score_states(query, states), torch_scorer.score(query, texts), atol=1e-4)


def test_reranker_needs_states_for_the_cached_path(tmp_path, ql_export, toy_beir):
    from llmql.connectors.registry import open_backend
    from llmql.connectors.sync import SyncConfig, sync

    sync(
        SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=str(tmp_path), index="plain", runtime="onnx"),
        progress=False,
    )
    backend = open_backend("embedded", str(tmp_path))
    scorer = OnnxQLScorer.from_dir(ql_export)
    with pytest.raises(ValueError, match="no cached QL states"):
        QLReranker(scorer, backend, "plain", path="cached").rerank("kelp", ["d1"])
    assert QLReranker(scorer, backend, "plain", path="auto").rerank("kelp", ["d1", "d2"]).path == "full"


def test_reranked_scores_follow_the_served_order(synced, ql_export):
    """The tail below a re-ranked head is scored below it, so a run file sorted by score is the served list."""
    backend, index = synced
    encoder, scorer = OnnxEncoder.from_dir(ql_export), OnnxQLScorer.from_dir(ql_export)
    searcher = HybridSearcher(backend, index, encoder, scorer, SearchConfig(rerank_depth=5, ql_weight=0.5))
    hits = searcher.search("granite ridge data", k=20).hits
    assert len(hits) == 20
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all("ql" in h.stages for h in hits[:5]) and not any("ql" in h.stages for h in hits[5:])
