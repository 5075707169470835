"""The service's model queue: shared calls give the answers single calls give, a full queue is a 503 and the
service stays up, BM25 requests never wait behind the model, and a failing call fails only its requests."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from llmql.export.runtime import OnnxEncoder
from llmql.plugin.batcher import ModelBatcher, Overloaded

TEXTS = [f"{w} study of the {v} lagoon" for w in ("kelp", "amber", "basalt", "quartz") for v in ("ridge", "dune")] * 8


@pytest.fixture
def encoder(ql_export):
    return OnnxEncoder.from_dir(ql_export)


def test_64_concurrent_requests_share_calls_and_get_what_single_calls_give(encoder):
    batcher = ModelBatcher(encoder, max_wait_ms=50)
    try:
        with ThreadPoolExecutor(64) as pool:
            batched = list(pool.map(lambda t: batcher.encode([t], "query")[0], TEXTS))
    finally:
        batcher.close()
    alone = np.stack([encoder.encode_queries([t])[0] for t in TEXTS])
    np.testing.assert_allclose(np.stack(batched), alone, atol=1e-5)
    assert batcher.stats.jobs == 64 and batcher.stats.model_calls < 32  # coalesced into shared calls


def blocked(batcher):
    """Occupy the worker until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait(10)

    threading.Thread(target=lambda: batcher.run(hold), daemon=True).start()
    started.wait(5)
    return release


def wait_until(condition, seconds: float = 10.0) -> None:
    """Poll `condition` until it holds; fail (never hang) after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_a_full_queue_refuses_at_once_and_the_worker_lives_on(encoder):
    batcher = ModelBatcher(encoder, max_queue=2)
    release = blocked(batcher)
    waiting = [threading.Thread(target=lambda: batcher.encode(["kelp"], "query")) for _ in range(2)]
    for thread in waiting:
        thread.start()
    wait_until(lambda: batcher.waiting >= 2)
    with pytest.raises(Overloaded, match="full"):
        batcher.encode(["one too many"], "query")
    release.set()
    for thread in waiting:
        thread.join(5)

    def boom():
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        batcher.run(boom)
    assert batcher.encode(["still serving"], "passage").shape == (1, encoder.dim)
    assert batcher.stats.rejected == 1
    batcher.close()


def test_service_503_when_full_while_bm25_is_served(ql_export, synced_embedded):
    from fastapi.testclient import TestClient

    from llmql.plugin.service import ServiceConfig, create_app

    backend, index = synced_embedded
    config = ServiceConfig(url=backend.location, index=index, max_queue=1)
    app = create_app(config, OnnxEncoder.from_dir(ql_export), None, backend)
    with TestClient(app) as client:
        batcher = app.state.batcher
        release = blocked(batcher)
        first = threading.Thread(target=lambda: client.post("/embed", json={"texts": ["kelp"]}))
        first.start()
        wait_until(lambda: batcher.waiting >= 1)
        full = client.post("/embed", json={"texts": ["granite"]})
        assert full.status_code == 503 and full.headers["retry-after"] == "1" and "full" in full.text
        bm25 = client.post("/search", json={"query": "kelp study", "mode": "bm25", "k": 3})
        assert bm25.status_code == 200 and len(bm25.json()["hits"]) == 3  # no model: not behind the queue
        release.set()
        first.join(5)
        health = client.get("/health").json()["model_queue"]
        assert health["rejected"] == 1 and health["limit"] == 1


def test_service_answers_64_concurrent_requests_as_it_answers_one(ql_export, synced_embedded):
    from fastapi.testclient import TestClient

    from llmql.plugin.service import ServiceConfig, create_app

    backend, index = synced_embedded
    app = create_app(
        ServiceConfig(url=backend.location, index=index, max_queue=64), OnnxEncoder.from_dir(ql_export), None, backend
    )
    with TestClient(app) as client, ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda t: client.post("/embed", json={"texts": [t]}).json(), TEXTS))
        searched = list(
            pool.map(lambda t: client.post("/search", json={"query": t, "mode": "dense", "k": 3}).json(), TEXTS[:16])
        )
        assert app.state.batcher.stats.model_calls < app.state.batcher.stats.jobs
    encoder = OnnxEncoder.from_dir(ql_export)
    np.testing.assert_allclose(
        np.array([a["embeddings"][0] for a in answers]), encoder.encode_queries(TEXTS), atol=1e-5
    )
    for text, answer in zip(TEXTS[:16], searched, strict=True):
        alone = backend.knn(index, encoder.encode_queries([text])[0], 3)
        assert [h["id"] for h in answer["hits"]] == [h.id for h in alone]


def test_a_request_alone_does_not_wait_for_the_batching_window(encoder):
    batcher = ModelBatcher(encoder, max_wait_ms=2000)
    try:
        batcher.encode(["warm up"], "query")
        start = time.perf_counter()
        batcher.encode(["kelp lagoon"], "query")
        assert time.perf_counter() - start < 1.0  # the window is 2 s
    finally:
        batcher.close()
