"""Schemathesis over the service's OpenAPI schema: every operation, /v1 included, with generated valid and
invalid requests (fixed seed, bounded examples): never a 500, never slower than 5 s, every error in its route
family's shape (llmql.plugin.http_errors)."""

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.plugin.service import ServiceConfig, create_app


@pytest.fixture(scope="module")
def app(ql_export, toy_beir, tmp_path_factory):
    root = tmp_path_factory.mktemp("schemathesis")
    sync(SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=str(root), index="docs", end_states="fp16"), False)
    return create_app(
        ServiceConfig(url=str(root), index="docs", max_k=20),
        OnnxEncoder.from_dir(ql_export),
        OnnxQLScorer.from_dir(ql_export),
        open_backend("embedded", str(root)),
    )


OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/ready"),
    ("POST", "/search"),
    ("POST", "/rerank"),
    ("POST", "/embed"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/rerank"),
    ("GET", "/v1/models"),
]


def error_shape_of(path: str) -> set[str]:
    if path.startswith(("/v1/embeddings", "/v1/models")):
        return {"error"}
    if path.startswith("/v1/rerank"):
        return {"message"}
    return {"detail"}


def test_the_schema_lists_every_operation_tested(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    listed = {(op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())}
    assert listed == set(OPERATIONS)


CASES = [
    (m, p, mode)
    for m, p in OPERATIONS
    for mode in schemathesis.GenerationMode
    if m == "POST" or mode.value == "positive"
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=lambda x: getattr(x, "value", x))
def test_no_request_breaks_the_service(app, method, path, mode):
    """Schemathesis' generated requests for one operation, valid and invalid (its Hypothesis strategy, run here
    so that the app can come from fixtures)."""
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]

    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        start = time.perf_counter()
        response = case.call()
        elapsed = time.perf_counter() - start
        assert response.status_code < 500 or response.status_code == 503, (case.as_curl_command(), response.text)
        assert elapsed < 5.0, (case.as_curl_command(), elapsed)
        if response.status_code >= 400:
            assert set(response.json()) == error_shape_of(path), (path, response.text)

    check()
