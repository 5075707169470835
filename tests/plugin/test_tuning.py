"""The tuner on hand-made score lists, the paired bootstrap by hand, and search.json as every searcher's default."""

import json
import shutil

import pytest

from llmql.plugin.fusion import fuse
from llmql.plugin.significance import paired_bootstrap
from llmql.plugin.tune import DENSE_WEIGHTS, Fusion, choose_fusion, choose_rerank, fused_run

QRELS = {"q1": "r1", "q2": "r2"}


def reciprocal_rank(run: dict) -> float:
    """A judge computed by hand: mean 1/rank of each query's one relevant document."""
    total = 0.0
    for qid, scores in run.items():
        order = sorted(scores, key=lambda d: (-scores[d], d))
        total += 1.0 / (order.index(QRELS[qid]) + 1) if QRELS[qid] in order else 0.0
    return total / len(run)


# q1: BM25 puts r1 second, dense first; q2: BM25 puts r2 first, dense last. By hand (min-max, convex weight w
# of dense): r1 leads q1 iff 0.9 + 0.1w > 1 - w (w > 0.09); r2 leads q2 iff w < 0.5. RRF ties b with r2 in q2.
STAGES = {
    "q1": {"bm25": {"a": 1.0, "r1": 0.9, "c": 0.0}, "dense": {"r1": 1.0, "a": 0.0, "c": 0.5}},
    "q2": {"bm25": {"r2": 1.0, "b": 0.0, "e": 0.5}, "dense": {"b": 1.0, "r2": 0.0, "e": 0.2}},
}


def test_the_tuner_picks_what_a_brute_force_search_picks():
    fusion, trials = choose_fusion(STAGES, reciprocal_rank)
    brute = {}
    for w in DENSE_WEIGHTS:
        run = {q: fuse(s, "minmax", {"bm25": 1 - w, "dense": w}) for q, s in STAGES.items()}
        brute[w] = reciprocal_rank(run)
    best = max(brute.values())
    assert fusion == Fusion("minmax", min(w for w, v in brute.items() if v == best)) == Fusion("minmax", 0.1)
    assert brute[0.0] == 0.75 and best == 1.0 and [t.ndcg10 for t in trials][:11] == list(brute.values())
    assert fusion.mode == "hybrid" and fusion.weights == {"bm25": 0.9, "dense": 0.1}


def test_noise_from_dense_keeps_bm25_at_weight_one():
    import random

    rng = random.Random(0)
    stages = {
        q: {"bm25": {r: 2.0, "x": 1.0, "y": 0.5}, "dense": {d: rng.random() for d in (r, "x", "y", "z")}}
        for q, r in QRELS.items()
    }
    fusion, _ = choose_fusion(stages, reciprocal_rank)
    assert fusion == Fusion("minmax", 0.0) and fusion.mode == "bm25" and fusion.weights == {"bm25": 1.0, "dense": 0.0}
    assert fused_run(stages, fusion) == {q: s["bm25"] for q, s in stages.items()}


def test_rerank_choice_by_hand():
    fused = {"q1": {"a": 3.0, "b": 2.0, "r1": 1.0}, "q2": {"r2": 3.0, "b": 2.0, "c": 1.0}}
    ql = {"q1": {"a": -9.0, "b": -8.0, "r1": -1.0}, "q2": {"r2": -2.0, "b": -1.0, "c": -3.0}}
    depth, weight, trials = choose_rerank(fused, ql, reciprocal_rank, depths=(2, 3))
    # No re-ranking: r1 third, r2 first: (1/3 + 1) / 2. Depth 2 never reaches r1. Depth 3, QL weight w (min-max):
    # q1 r1 = w against a = 1 - w, so r1 leads from w = 0.75; q2 r2 = 1 - w/2 against b = 1/2 + w/2, so r2 drops
    # to second from w = 0.5. At (3, 0.75): (1 + 1/2) / 2 = 0.75, the first setting strictly above 2/3.
    assert trials[0].setting == {"depth": 0, "ql_weight": 0.0} and trials[0].ndcg10 == pytest.approx(2 / 3)
    assert (depth, weight) == (3, 0.75)
    assert max(t.ndcg10 for t in trials) == pytest.approx(0.75)


def test_paired_bootstrap_by_hand():
    same = paired_bootstrap([0.2, 0.5, 0.7], [0.2, 0.5, 0.7])
    assert (same.mean, same.low, same.high, same.clear) == (0.0, 0.0, 0.0, False)
    shift = paired_bootstrap([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    assert (shift.mean, shift.low, shift.high, shift.clear) == (1.0, 1.0, 1.0, True)
    half = paired_bootstrap([1.0, 0.0] * 50, [0.0] * 100)
    assert half.mean == 0.5 and 0.38 < half.low < 0.5 < half.high < 0.62
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


@pytest.fixture
def own_export(ql_export, tmp_path):
    """A copy of the export: search.json written into it must not change what other tests search with."""
    return shutil.copytree(ql_export, tmp_path / "export")


def test_search_json_round_trips_and_is_every_searchers_default(own_export, synced_embedded):
    from llmql.export.runtime import load_encoder
    from llmql.plugin.search import HybridSearcher, SearchConfig
    from llmql.plugin.search_settings import read_search_settings, save_search_settings, search_config

    backend, index = synced_embedded
    tuned = SearchConfig(
        mode="hybrid", fusion="minmax", weights={"bm25": 0.7, "dense": 0.3}, rerank_depth=20, ql_weight=0.25
    )
    save_search_settings(own_export, tuned, {"tuned_on": {"split": "dev"}})
    assert read_search_settings(own_export)["search"]["weights"] == {"bm25": 0.7, "dense": 0.3}
    assert search_config(own_export) == tuned
    assert search_config(own_export, ql_weight=0.9, fusion=None).ql_weight == 0.9
    searcher = HybridSearcher(backend, index, load_encoder(own_export, runtime="onnx"))
    assert searcher.config.weights == {"bm25": 0.7, "dense": 0.3} and searcher.config.rerank_depth == 0  # no scorer


def test_tune_writes_search_json_and_eval_uses_it(own_export, synced_embedded, toy_beir, tmp_path):
    from click.testing import CliRunner

    from llmql.plugin.search_cli import eval_main, tune_cmd

    backend, index = synced_embedded
    location = backend.location
    common = [
        "--data",
        str(toy_beir),
        "--url",
        location,
        "--index",
        index,
        "--model",
        str(own_export),
        "--runtime",
        "onnx",
    ]
    result = CliRunner().invoke(tune_cmd, [*common, "--split", "train", "--ql-model", str(own_export)])
    assert result.exit_code == 0, result.output
    settings = json.loads((own_export / "search.json").read_text())
    figures = settings["figures"]
    assert settings["tuned_on"]["split"] == "train" and len(figures["fusion"]) == 12
    assert figures["chosen"] >= figures["bm25"] and figures["chosen"] == max(
        t["ndcg@10"] for t in figures["fusion"] + figures["rerank"]
    )
    out = tmp_path / "eval"
    evaluated = CliRunner().invoke(eval_main, [*common, "--split", "test", "--runs", "bm25,hybrid", "--out", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "vs BM25" in evaluated.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["source"] == "search.json"
    assert summary["settings"]["weights"] == settings["search"]["weights"]
    assert "vs_bm25" in summary["runs"]["hybrid"] and "vs_bm25" not in summary["runs"]["bm25"]
    same = CliRunner().invoke(eval_main, [*common, "--split", "test", "--tune-on", "test", "--out", str(out)])
    assert same.exit_code == 2 and "overstate" in same.output


def test_the_service_searches_with_the_tuned_settings_by_default(own_export, synced_embedded):
    from fastapi.testclient import TestClient

    from llmql.export.runtime import load_encoder, load_ql_scorer
    from llmql.plugin.search import SearchConfig
    from llmql.plugin.search_settings import save_search_settings
    from llmql.plugin.service import ServiceConfig, create_app

    backend, index = synced_embedded
    save_search_settings(own_export, SearchConfig(mode="bm25", rerank_depth=5, ql_weight=1.0), {})
    app = create_app(
        ServiceConfig(url=backend.location, index=index),
        load_encoder(own_export, runtime="onnx"),
        load_ql_scorer(own_export, runtime="onnx"),
        backend,
    )
    client = TestClient(app)
    tuned = client.post("/search", json={"query": "kelp study", "k": 5, "explain": True}).json()
    assert tuned["ql_path"] == "cached" and set(tuned["timings_ms"]) == {"bm25", "ql_rerank"}
    assert all(set(h["stages"]) == {"bm25", "ql"} for h in tuned["hits"])
    asked = client.post("/search", json={"query": "kelp study", "k": 5, "mode": "hybrid", "rerank": False}).json()
    assert set(asked["timings_ms"]) == {"bm25", "encode", "knn", "fusion"}
