"""The HTTP service: endpoints, OpenAPI, and clear 4xx answers to bad input while staying up."""

import pytest
from fastapi.testclient import TestClient

from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.plugin.service import MAX_BODY_BYTES, ServiceConfig, create_app


@pytest.fixture(scope="module")
def client(ql_export, toy_beir, tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    sync(
        SyncConfig(
            corpus=str(toy_beir), model=str(ql_export), url=str(root), index="docs", end_states="fp16", runtime="onnx"
        ),
        progress=False,
    )
    app = create_app(
        ServiceConfig(url=str(root), index="docs", max_k=20),
        OnnxEncoder.from_dir(ql_export),
        OnnxQLScorer.from_dir(ql_export),
        open_backend("embedded", str(root)),
    )
    return TestClient(app)


def test_health_and_openapi(client):
    assert client.get("/health").json()["documents"] == 24
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/rerank", "/embed", "/health"} <= set(paths)


def test_start_up_freezes_its_objects_out_of_the_collector(client):
    """Under load, full collections walked torch and the model every few seconds (about 300 ms each, every
    thread stopped: the /health tail of bench.serve_load --soak); frozen at start-up, they are skipped."""
    import gc

    gc.unfreeze()
    try:
        with TestClient(client.app):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_search_embed_rerank(client):
    hits = client.post("/search", json={"query": "kelp study", "k": 3, "rerank": True, "explain": True}).json()
    assert len(hits["hits"]) == 3 and "stages" in hits["hits"][0] and hits["ql_path"] == "cached"
    embed = client.post("/embed", json={"texts": ["kelp", "granite"], "kind": "passage"}).json()
    assert embed["dim"] == 32 and len(embed["embeddings"]) == 2
    by_ids = client.post("/rerank", json={"query": "kelp", "ids": ["d10", "d3"]}).json()
    assert {r["id"] for r in by_ids["results"]} == {"d10", "d3"} and by_ids["path"] == "cached"
    by_text = client.post(
        "/rerank",
        json={
            "query": "kelp",
            "candidates": [{"id": "x", "text": "kelp kelp lagoon"}, {"id": "y", "text": "granite ridge"}],
        },
    ).json()
    assert [r["id"] for r in by_text["results"]] and by_text["path"] == "full"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "text"),
    [
        ("post", "/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ("post", "/search", {"json": {"query": "   "}}, 422, "blank"),
        ("post", "/search", {"json": {"query": ""}}, 422, "at least 1 character"),
        ("post", "/search", {"json": {"query": "kelp", "index": "nope"}}, 403, "not served"),
        ("post", "/search", {"json": {"query": "kelp", "k": 50}}, 400, "limit of 20"),
        ("post", "/search", {"content": b"x" * (MAX_BODY_BYTES + 1)}, 413, "bytes"),
        ("post", "/embed", {"json": {"texts": []}}, 422, "at least 1 item"),
        ("post", "/rerank", {"json": {"query": "kelp"}}, 422, "exactly one of"),
        ("post", "/rerank", {"json": {"query": "kelp", "ids": ["missing-doc"]}}, 404, "missing-doc"),
        (
            "post",
            "/rerank",
            {"json": {"query": "kelp", "candidates": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}},
            422,
            "unique",
        ),
    ],
)
def test_bad_input_is_a_clear_4xx_and_the_service_stays_up(client, method, path, kwargs, status, text):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert text in response.text
    assert client.get("/health").status_code == 200


def test_a_chunked_body_is_counted_too(client):
    def chunks():  # no Content-Length: the client streams the body
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b"x" * 4096

    response = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "bytes" in response.text
    assert client.get("/health").status_code == 200


def test_a_small_chunked_body_is_served(client):
    response = client.post(
        "/search", content=iter([b'{"query": "kelp",', b' "k": 2}']), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200 and len(response.json()["hits"]) == 2


def test_an_invalid_content_length_is_a_400(client):
    response = client.post("/search", content=b"{}", headers={"content-length": "abc"})
    assert response.status_code == 400 and "Content-Length" in response.text


def test_pages_follow_each_other_and_fields_are_chosen(client):
    def page(**body):
        answer = client.post("/search", json={"query": "kelp study", "mode": "bm25", **body})
        assert answer.status_code == 200, answer.text
        return answer.json()["hits"]

    whole = [h["id"] for h in page(k=12)]
    pages = [h["id"] for start in (0, 4, 8) for h in page(**{"from": start, "size": 4})]
    assert pages == whole and len(set(whole)) == 12  # no overlap, no gap
    assert page(**{"from": 30, "size": 5}) == []  # past the end: an empty page
    default = page(k=1)[0]
    assert "text" not in default and "title" in default  # by default every stored field but the text
    chosen = page(k=1, fields=["text"])[0]
    assert set(chosen) == {"id", "score", "text", "fields"} and chosen["text"]
    both = client.post("/search", json={"query": "kelp", "k": 3, "size": 4})
    assert both.status_code == 422 and "not both" in both.text


def test_paging_past_the_candidate_depth_is_refused(ql_export, toy_beir, tmp_path):
    from llmql.plugin.search import HybridSearcher, SearchConfig

    sync(SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=str(tmp_path), index="docs"), progress=False)
    searcher = HybridSearcher(
        open_backend("embedded", str(tmp_path)),
        "docs",
        OnnxEncoder.from_dir(ql_export),
        config=SearchConfig(bm25_k=8, knn_k=8),
    )
    first, second = searcher.search("kelp", 4).hits, searcher.search("kelp", 4, offset=4).hits
    assert [h.id for h in first + second] == [h.id for h in searcher.search("kelp", 8).hits]
    with pytest.raises(ValueError, match="past the 8 candidates"):
        searcher.search("kelp", 4, offset=6)


def test_a_chunked_index_answers_documents_with_the_passage_that_matched(ql_export, tmp_path):
    """/search over a chunked index: one hit per document, and the span of the text that matched (dense, and QL's
    best passage when re-ranked), so a caller can highlight it."""
    import json

    long = " ".join(f"granite ridge note {i} about basalt and kelp lagoon water" for i in range(10))
    docs = [{"_id": "long", "title": "Granite", "text": long}, {"_id": "kelp", "title": "", "text": "kelp lagoon"}]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    root = str(tmp_path / "db")
    cfg = SyncConfig(
        corpus=str(corpus),
        model=str(ql_export),
        url=root,
        index="docs",
        end_states="fp16",
        runtime="onnx",
        chunk_tokens=16,
        chunk_overlap=2,
    )
    assert sync(cfg, progress=False).passages > 3
    app = create_app(
        ServiceConfig(url=root, index="docs"),
        OnnxEncoder.from_dir(ql_export),
        OnnxQLScorer.from_dir(ql_export),
        open_backend("embedded", root),
    )
    client = TestClient(app)
    for body in ({"query": "basalt note 7", "mode": "dense"}, {"query": "basalt note 7", "rerank": True}):
        hits = client.post("/search", json={**body, "k": 5, "fields": ["text"]}).json()["hits"]
        assert sorted(h["id"] for h in hits) == ["kelp", "long"]
        span = next(h for h in hits if h["id"] == "long")["passage"]
        assert 0 <= span["start"] < span["end"] <= len(long) and span["end"] - span["start"] < len(long) // 2


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"query": "kelp", "from": True}, "from"),  # a boolean is not a number
        ({"query": "kelp", "from": "5"}, "from"),  # nor is a string of digits
        ({"query": "kelp", "k": 2.0}, "k"),
        ({"query": "kelp", "index": ""}, "index"),  # not the default index in disguise
        ({"query": "kelp", "fields": ["title", "no-such-field"]}, "no-such-field"),
        ({"query": "kelp", "filter": {"year": {"gte": float("nan")}}}, "finite"),  # F7 over HTTP
        ({"query": "kelp", "filter": {"year": {"lt": float("inf")}}}, "finite"),
    ],
)
def test_search_refuses_what_it_would_have_guessed(client, body, text):
    import json

    response = client.post("/search", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert text in response.text and "detail" in response.json()


@pytest.mark.parametrize(
    ("path", "request_kwargs", "status", "shape"),
    [
        ("/v1/embeddings", {"content": b"x" * (MAX_BODY_BYTES + 1)}, 413, "openai"),
        ("/v1/rerank", {"content": b"x" * (MAX_BODY_BYTES + 1)}, 413, "cohere"),
        ("/v1/embeddings", {"content": b'{"input": "\xff\xfe", "model": "llmql"}'}, 400, "openai"),
        ("/v1/rerank", {"json": {"query": "kelp", "documents": ["kelp", "   "]}}, 422, "cohere"),
        ("/v1/rerank", {"json": {"query": "kelp", "documents": [{"text": " "}]}}, 422, "cohere"),
        ("/v1/embeddings", {"json": {"input": "kelp", "model": "other"}}, 404, "openai"),
        ("/search", {"content": b"x" * (MAX_BODY_BYTES + 1)}, 413, "detail"),
    ],
)
def test_every_error_comes_in_its_route_familys_shape(client, path, request_kwargs, status, shape):
    response = client.post(path, headers={"content-type": "application/json"}, **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    if shape == "openai":
        assert set(body) == {"error"} and body["error"]["message"] and body["error"]["type"]
    elif shape == "cohere":
        assert set(body) == {"message"} and body["message"]
    else:
        assert set(body) == {"detail"}
