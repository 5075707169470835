"""The service in production: /metrics in Prometheus' format, scraped by a real Prometheus whose PromQL answers
match what the test sent; /ready against /health; JSON access lines with the request id."""

import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.plugin.service import ServiceConfig, create_app


@pytest.fixture
def app(ql_export, toy_beir, tmp_path_factory):
    """A fresh service (its own metrics) over the toy corpus with cached [E] states."""
    root = str(tmp_path_factory.mktemp("metrics"))
    sync(SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=root, index="docs", end_states="fp16"), False)
    return create_app(
        ServiceConfig(url=root, index="docs"),
        OnnxEncoder.from_dir(ql_export),
        OnnxQLScorer.from_dir(ql_export),
        open_backend("embedded", root),
    )


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value of every sample in a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_count_what_was_asked_with_prometheus_names(app):
    client = TestClient(app)
    before = samples(client.get("/metrics").text)
    for _ in range(3):
        assert client.post("/search", json={"query": "kelp lagoon", "rerank": True}).status_code == 200
    assert client.post("/search", json={"query": " "}).status_code == 422
    assert client.post("/embed", json={"texts": ["kelp", "granite", "amber"]}).status_code == 200
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    now = samples(answer.text)

    def grew(name: str) -> float:
        return now.get(name, 0.0) - before.get(name, 0.0)

    assert grew('llmql_requests_total{route="/search",status="200"}') == 3
    assert grew('llmql_requests_total{route="/search",status="422"}') == 1
    assert grew('llmql_request_duration_seconds_count{route="/search"}') == 4
    for stage in ("bm25", "encode", "knn", "fusion", "ql_rerank"):
        assert grew(f'llmql_stage_duration_seconds_count{{stage="{stage}"}}') == 3, stage
    assert grew("llmql_model_batch_rows_sum") >= 3 + 3  # 3 queries encoded, and the 3 /embed texts
    assert now['llmql_index_documents{index="docs"}'] == 24
    assert "llmql_model_queue_depth" in now
    info = [k for k in now if k.startswith("llmql_model_info")]
    identity = app.state.batcher.encoder.identity
    assert info and 'backend="embedded"' in info[0] and f'encoder="{identity}"' in info[0]


def test_ready_answers_only_when_the_index_does(app, ql_export, toy_beir, tmp_path):
    assert TestClient(app).get("/ready").json()["status"] == "ready"
    root = str(tmp_path / "db")
    sync(SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=root, index="docs"), False)
    lost = create_app(
        ServiceConfig(url=root, index="docs"), OnnxEncoder.from_dir(ql_export), None, open_backend("embedded", root)
    )
    shutil.rmtree(root)  # the engine's data gone under the running service
    client = TestClient(lost)
    ready = client.get("/ready")
    assert ready.status_code == 503 and "docs" in ready.json()["detail"]
    assert client.get("/health").status_code in (200, 503)  # liveness answers either way, never hangs


def test_access_lines_are_json_with_the_request_id(app, caplog):
    with caplog.at_level(logging.INFO, logger="llmql.access"):
        TestClient(app).post("/search", json={"query": "kelp"}, headers={"X-Request-ID": "trace-7"})
    record = next(r for r in caplog.records if r.name == "llmql.access")
    from llmql.plugin.service_logs import JsonLines

    line = json.loads(JsonLines().format(record))
    assert line["request_id"] == "trace-7" and line["route"] == "/search" and line["status"] == 200
    assert line["duration_ms"] > 0 and line["method"] == "POST"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    message = "no prometheus binary (Debian's `prometheus` package; .ci/run installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_real_prometheus_scrapes_the_service_and_promql_returns_what_was_sent(app, tmp_path):
    import uvicorn

    binary = prometheus_binary()
    service_port, prometheus_port = free_port(), free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=service_port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: llmql\n    static_configs: [{{targets: ['127.0.0.1:{service_port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{prometheus_port}/api/v1/query"
    try:

        def query(promql: str) -> list:
            return httpx.get(api, params={"query": promql}, timeout=5).json()["data"]["result"]

        deadline = time.time() + 60
        while time.time() < deadline:  # Prometheus up and the service scraped once
            try:
                if query('up{job="llmql"} == 1'):
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus never scraped the service")
        base = f"http://127.0.0.1:{service_port}"
        before = query('sum(llmql_requests_total{route="/search"})')
        sent = 12
        bm25_ms = []
        for _ in range(sent):
            answer = httpx.post(f"{base}/search", json={"query": "kelp lagoon", "mode": "bm25"}, timeout=30)
            bm25_ms.append(answer.json()["timings_ms"]["bm25"])
        counted = float(before[0]["value"][1]) if before else 0.0
        deadline = time.time() + 30
        total = 0.0
        while time.time() < deadline:
            result = query('sum(llmql_requests_total{route="/search"})')
            total = float(result[0]["value"][1]) if result else 0.0
            if total - counted >= sent:
                break
            time.sleep(0.5)
        assert total - counted == sent
        rate = query('sum(rate(llmql_requests_total{route="/search"}[30s]))')
        assert rate and float(rate[0]["value"][1]) > 0
        p50 = query('histogram_quantile(0.5, sum by (le) (llmql_stage_duration_seconds_bucket{stage="bm25"}))')
        median = sorted(bm25_ms)[len(bm25_ms) // 2] / 1000
        estimate = float(p50[0]["value"][1])
        # the estimate interpolates inside the median's bucket: within one bucket's width of the true median
        from llmql.plugin.metrics import LATENCY

        upper = next(b for b in LATENCY if b >= median)
        lower = max([0.0, *[b for b in LATENCY if b < median]])
        assert lower <= estimate <= upper, (estimate, median)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        server.should_exit = True
