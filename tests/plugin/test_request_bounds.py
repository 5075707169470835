"""Every request is bounded: headers and body within a deadline (408), a body declared JSON (415), answered in
the route family's shape. Against a real uvicorn on a local port with llmql's protocol, at a 1-second deadline."""

import json
import socket
import threading
import time

import pytest

from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.plugin.http_server import header_deadline_protocol
from llmql.plugin.service import ServiceConfig, create_app

DEADLINE = 1.0


@pytest.fixture(scope="module")
def server(ql_export, toy_beir, tmp_path_factory):
    import uvicorn

    root = str(tmp_path_factory.mktemp("bounds"))
    sync(SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=root, index="docs"), progress=False)
    app = create_app(
        ServiceConfig(url=root, index="docs", request_timeout_s=DEADLINE),
        OnnxEncoder.from_dir(ql_export),
        OnnxQLScorer.from_dir(ql_export),
        open_backend("embedded", root),
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", http=header_deadline_protocol(DEADLINE)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def exchange(port: int, raw: bytes, wait: float = 10.0) -> tuple[bytes, float]:
    """Send `raw` and read until the server closes or answers; (answer, seconds it took)."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        conn.sendall(raw)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"content-length" in b"".join(chunks).lower():
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = int(
                    next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
                )
                if len(body) >= length:
                    break
    return b"".join(chunks), time.perf_counter() - start


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_headers_that_never_finish_get_a_408_and_the_connection_closed(server):
    answer, seconds = exchange(server, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Ty")
    status, body = status_and_body(answer)
    assert status == 408 and "headers" in body["detail"] and DEADLINE * 0.8 < seconds < DEADLINE + 5


@pytest.mark.parametrize(
    ("path", "shape"), [("/search", "detail"), ("/v1/embeddings", "error"), ("/v1/rerank", "message")]
)
def test_a_body_that_never_finishes_gets_a_408_in_its_route_familys_shape(server, path, shape):
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    answer, seconds = exchange(server, head.encode() + b'{"query": "kel')
    status, body = status_and_body(answer)
    assert status == 408 and set(body) == {shape} and DEADLINE * 0.8 < seconds < DEADLINE + 5


def test_many_half_requests_are_all_answered_and_the_service_stays_up(server):
    results = []

    def half():
        results.append(exchange(server, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"))

    threads = [threading.Thread(target=half) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 20 and all(status_and_body(a)[0] == 408 for a, _ in results)
    answer, _ = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_and_body(answer)[0] == 200


@pytest.mark.parametrize(
    ("content_type", "path", "shape"),
    [
        ("text/plain", "/search", "detail"),
        (None, "/search", "detail"),  # no Content-Type was taken as JSON
        ("application/x-www-form-urlencoded", "/v1/embeddings", "error"),
        ("text/plain; charset=utf-8", "/v1/rerank", "message"),
    ],
)
def test_a_body_not_declared_json_is_a_415(server, content_type, path, shape):
    body = b'{"query": "kelp"}'
    typed = f"Content-Type: {content_type}\r\n" if content_type else ""
    raw = f"POST {path} HTTP/1.1\r\nHost: x\r\n{typed}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    status, answer = status_and_body(exchange(server, raw.encode() + body)[0])
    assert status == 415 and set(answer) == {shape} and "JSON" in json.dumps(answer)


def test_json_with_a_charset_or_a_json_subtype_is_served(server):
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        body = b'{"query": "kelp", "mode": "bm25"}'
        raw = f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        status, answer = status_and_body(exchange(server, raw.encode() + b"Connection: close\r\n\r\n" + body)[0])
        assert status == 200 and answer["hits"], content_type
