import math

import pytest

from llmql.plugin.fusion import fuse, interpolate, min_max, rerank_head, rrf, z_score


def test_min_max_with_ties_and_single_results():
    assert min_max({"a": 3.0, "b": 1.0, "c": 2.0}) == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert min_max({"a": 2.0, "b": 2.0}) == {"a": 1.0, "b": 1.0}  # all tied: each is the best of its list
    assert min_max({"only": -7.5}) == {"only": 1.0}
    assert min_max({}) == {}


def test_z_score_and_zero_variance():
    out = z_score({"a": 1.0, "b": 3.0})
    assert out == {"a": -1.0, "b": 1.0}
    assert z_score({"a": 5.0, "b": 5.0}) == {"a": 0.0, "b": 0.0}


def test_rrf_ranks_and_tie_break():
    assert rrf({"a": 0.9, "b": 0.5, "c": 0.7}, k=60) == {"a": 1 / 61, "c": 1 / 62, "b": 1 / 63}
    assert rrf({"y": 1.0, "x": 1.0}, k=0) == {"x": 1.0, "y": 0.5}  # equal scores: by id


def test_fuse_rrf_by_hand():
    stages = {"bm25": {"a": 10.0, "b": 5.0}, "dense": {"b": 0.9, "c": 0.8}}
    fused = fuse(stages, "rrf", rrf_k=60)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61) and fused["c"] == pytest.approx(1 / 62)


def test_fuse_minmax_weights_and_missing_documents():
    stages = {"bm25": {"a": 10.0, "b": 0.0}, "dense": {"b": 1.0, "c": 0.5, "d": 0.0}}
    fused = fuse(stages, "minmax", weights={"bm25": 2.0, "dense": 1.0})
    assert fused == {"a": 2.0, "b": 1.0, "c": 0.5, "d": 0.0}


def test_fuse_zscore_missing_gets_the_stage_minimum():
    stages = {"bm25": {"a": 1.0, "b": 3.0}, "dense": {"a": 2.0, "b": 2.0, "c": 2.0}}
    fused = fuse(stages, "zscore")
    assert fused == {"a": -1.0, "b": 1.0, "c": -1.0}  # c is absent from bm25: it takes bm25's lowest z


def test_interpolate():
    out = interpolate({"a": 1.0, "b": 0.0}, {"a": -10.0, "b": -5.0}, alpha=0.5)
    assert out == {"a": 0.5, "b": 0.5}
    assert interpolate({"a": 1.0, "b": 0.0}, {"a": -10.0, "b": -5.0}, alpha=1.0) == {"a": 0.0, "b": 1.0}
    assert math.isclose(interpolate({"a": 3.0}, {"a": 1.0}, 0.25)["a"], 1.0)


def test_opensearch_hybrid_query_and_pipeline_shapes():
    from llmql.plugin.server_fusion import hybrid_query, normalization_pipeline

    query = hybrid_query("kelp", [0.1, 0.2], k=50, size=5)
    lexical, dense = query["query"]["hybrid"]["queries"]
    assert lexical["multi_match"]["query"] == "kelp" and dense["knn"]["vector"] == {"vector": [0.1, 0.2], "k": 50}
    processor = normalization_pipeline(weights=(0.3, 0.7))["phase_results_processors"][0]["normalization-processor"]
    assert processor["combination"]["parameters"]["weights"] == [0.3, 0.7]


def test_rerank_head_keeps_the_tail_below_the_head():
    fused = {"a": 0.9, "b": 0.8, "c": 0.7, "t1": 0.03, "t2": 0.02}
    ql = {"a": -30.0, "b": -10.0, "c": -20.0}
    # alpha 1: QL alone orders the head b, c, a; minmax gives b 1.0, c 0.5, a 0.0
    out = rerank_head(fused, ql, ["a", "b", "c"], ["t1", "t2"], alpha=1.0)
    assert out == {"b": 1.0, "c": 0.5, "a": 0.0, "t1": -1.0, "t2": -2.0}
    assert sorted(out, key=lambda d: -out[d]) == ["b", "c", "a", "t1", "t2"]
    # alpha 0: the head keeps its fused order, the tail's small fused scores never overtake a head document
    out = rerank_head(fused, ql, ["a", "b", "c"], ["t1", "t2"], alpha=0.0)
    assert out["c"] == 0.0 and out["t1"] == -1.0 and out["t2"] == -2.0
    assert rerank_head(fused, {}, [], ["t1"], alpha=0.5) == {"t1": -1.0}
