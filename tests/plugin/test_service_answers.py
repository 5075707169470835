"""The service's answers, not only their shapes: vectors equal the encoder's, orders equal the scorer's, a
re-ranked search equals `HybridSearcher`'s, and an unexpected error is a 500 in its route family's shape that
carries a request id and is logged with its traceback."""

import logging
import math
import random
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from llmql.connectors.registry import open_backend
from llmql.connectors.state_blobs import unpack
from llmql.connectors.sync import SyncConfig, sync
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.plugin.search import HybridSearcher, default_config
from llmql.plugin.service import ServiceConfig, create_app
from llmql.train.data import load_beir

TEXTS = ["kelp forests in cold water", "volcanic soil", "naïve café — 日本語", "granite ridge " * 40]


@pytest.fixture(scope="module")
def served(ql_export, toy_beir, tmp_path_factory):
    """(client, encoder, scorer, backend) over the toy corpus with cached [E] states, batching on."""
    root = str(tmp_path_factory.mktemp("answers"))
    cfg = SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=root, index="docs", end_states="fp16")
    assert sync(cfg, progress=False).ok
    encoder, scorer, backend = (
        OnnxEncoder.from_dir(ql_export),
        OnnxQLScorer.from_dir(ql_export),
        open_backend("embedded", root),
    )
    client = TestClient(create_app(ServiceConfig(url=root, index="docs"), encoder, scorer, backend))
    return client, encoder, scorer, backend


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_embed_and_v1_embeddings_give_the_encoders_vectors(served, kind):
    client, encoder, _, _ = served
    expected = encoder.encode_queries(TEXTS) if kind == "query" else encoder.encode_passages(TEXTS)
    embed = client.post("/embed", json={"texts": TEXTS, "kind": kind}).json()["embeddings"]
    assert cosines(embed, expected).min() >= 0.9999
    body = {"input": TEXTS, "model": "llmql", "input_type": kind}
    v1 = [d["embedding"] for d in client.post("/v1/embeddings", json=body).json()["data"]]
    assert cosines(v1, expected).min() >= 0.9999
    other = encoder.encode_passages(TEXTS) if kind == "query" else encoder.encode_queries(TEXTS)
    assert cosines(embed, other).min() < 0.9999  # the two prompts differ: a swapped kind would be caught


def ranked(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda d: (-scores[d], d))


def test_rerank_by_ids_is_the_scorers_order_over_the_indexed_states(served):
    client, _, scorer, backend = served
    ids = [f"d{i}" for i in range(24)]
    random.Random(0).shuffle(ids)
    records = backend.fetch("docs", ids, with_state=True)
    for query in ("kelp lagoon", "granite ridge models improve"):
        expected = dict(zip(ids, scorer.score_states(query, unpack([records[i].end_states for i in ids])), strict=True))
        answer = client.post("/rerank", json={"query": query, "ids": ids}).json()
        assert answer["path"] == "cached"
        assert [r["id"] for r in answer["results"]] == ranked(expected)
        for r in answer["results"]:
            assert r["score"] == pytest.approx(expected[r["id"]], abs=1e-6)


def test_rerank_of_given_texts_and_v1_rerank_are_the_full_scorers_order(served):
    client, _, scorer, _ = served
    docs = [f"{w} kelp lagoon" if i % 3 else f"granite {w}" for i, w in enumerate(TEXTS * 3)]
    query = "kelp lagoon water"
    full = scorer.score(query, docs)
    candidates = [{"id": f"c{i}", "text": d} for i, d in enumerate(docs)]
    answer = client.post("/rerank", json={"query": query, "candidates": candidates}).json()
    assert [r["id"] for r in answer["results"]] == ranked({f"c{i}": s for i, s in enumerate(full)})
    v1 = client.post("/v1/rerank", json={"query": query, "documents": docs}).json()
    assert [r["index"] for r in v1["results"]] == list(np.lexsort((np.arange(len(full)), -full)))
    tokens = len(scorer.tokenizer.ql_queries([query])[0])
    for r in v1["results"]:
        assert r["relevance_score"] == pytest.approx(math.exp(full[r["index"]] / tokens), rel=1e-5)


def test_search_with_rerank_is_the_hybrid_searchers_answer(served, toy_beir):
    client, encoder, scorer, backend = served
    config = replace(default_config(encoder, scorer), rerank_depth=50, ql_path="cached")
    searcher = HybridSearcher(backend, "docs", encoder, scorer, config)
    queries = load_beir(toy_beir, "test").queries
    for query in list(queries.values())[:4]:
        expected = searcher.search(query, 7).hits
        answer = client.post("/search", json={"query": query, "k": 7, "rerank": True}).json()
        assert [h["id"] for h in answer["hits"]] == [h.id for h in expected]
        assert [h["score"] for h in answer["hits"]] == pytest.approx([h.score for h in expected], abs=1e-6)


class Failing:
    """Wraps a model; once `broken`, every model call raises what no handler knows."""

    def __init__(self, inner):
        self.inner, self.broken = inner, False

    def __getattr__(self, name):
        value = getattr(self.inner, name)
        if callable(value) and self.broken:

            def fail(*args, **kwargs):
                raise RuntimeError("boom in the model")

            return fail
        return value


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/embed", {"texts": ["kelp"]}, "detail"),
        ("/search", {"query": "kelp", "rerank": True}, "detail"),
        ("/rerank", {"query": "kelp", "ids": ["d1", "d2"]}, "detail"),
        ("/v1/embeddings", {"input": "kelp", "model": "llmql"}, "openai"),
        ("/v1/rerank", {"query": "kelp", "documents": ["kelp lagoon", "granite"]}, "cohere"),
    ],
)
def test_an_unexpected_error_is_a_500_in_its_route_familys_shape_with_a_request_id(
    ql_export, toy_beir, tmp_path, caplog, path, body, shape
):
    root = str(tmp_path)
    sync(SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=root, index="docs", end_states="fp16"), False)
    encoder, scorer = Failing(OnnxEncoder.from_dir(ql_export)), Failing(OnnxQLScorer.from_dir(ql_export))
    app = create_app(
        ServiceConfig(url=root, index="docs", batching=False), encoder, scorer, open_backend("embedded", root)
    )
    encoder.broken = scorer.broken = True
    client = TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="llmql.plugin.middleware"):
        response = client.post(path, json=body, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "req-42"
    answer = response.json()
    message = {
        "detail": lambda: answer["detail"],
        "openai": lambda: answer["error"]["message"],
        "cohere": lambda: answer["message"],
    }[shape]()
    assert (
        "req-42" in message and set(answer) == {"detail": {"detail"}, "openai": {"error"}, "cohere": {"message"}}[shape]
    )
    if shape == "openai":
        assert answer["error"]["type"] == "server_error"
    logged = [r for r in caplog.records if "req-42" in r.getMessage()]
    assert logged and "boom in the model" in str(logged[0].exc_info[1])
    assert client.get("/health").status_code == 200


def test_every_answer_carries_a_request_id(served):
    client, _, _, _ = served
    mine = client.get("/health", headers={"X-Request-ID": "abc-1"})
    assert mine.headers["x-request-id"] == "abc-1"
    fresh = {client.post("/search", json={"query": "kelp"}).headers["x-request-id"] for _ in range(3)}
    assert len(fresh) == 3
    refused = client.post("/search", json={"query": " "}, headers={"X-Request-ID": "x" * 500})
    assert refused.status_code == 422 and len(refused.headers["x-request-id"]) == 32  # too long: replaced
