"""One mapping of both clients' exceptions: a server that is down is unreachable (never an unknown index)."""

import pytest

from llmql.connectors.base import BackendError, BackendUnavailable, UnknownIndex
from llmql.connectors.lucene import client_error


def opensearch_errors():
    from opensearchpy import exceptions as ex

    return [
        (ex.ConnectionError("N/A", "Connection refused", OSError()), BackendUnavailable, "cannot connect"),
        (ex.ConnectionTimeout("TIMEOUT", "timed out", OSError()), BackendUnavailable, "cannot connect"),
        (ex.TransportError(503, "unavailable", {}), BackendUnavailable, "cannot connect"),
        (ex.NotFoundError(404, "index_not_found_exception", {}), UnknownIndex, "not found"),
        (ex.AuthenticationException(401, "unauthorized", {}), BackendError, "authentication failed (HINT)"),
        (ex.AuthorizationException(403, "forbidden", {}), BackendError, "not authorised"),
        (ex.RequestError(400, "mapper_parsing_exception", {}), BackendError, "400 mapper_parsing_exception"),
    ]


def elasticsearch_errors():
    import elastic_transport
    from elasticsearch import ApiError, AuthenticationException, NotFoundError

    def meta(status):
        return elastic_transport.ApiResponseMeta(
            status, "1.1", elastic_transport.HttpHeaders(), 0.0, elastic_transport.NodeConfig("http", "localhost", 9200)
        )

    return [
        (elastic_transport.ConnectionError("Connection refused"), BackendUnavailable, "cannot connect"),
        (elastic_transport.ConnectionTimeout("timed out"), BackendUnavailable, "cannot connect"),
        (NotFoundError("index_not_found_exception", meta(404), {}), UnknownIndex, "not found"),
        (AuthenticationException("unauthorized", meta(401), {}), BackendError, "authentication failed (HINT)"),
        (ApiError("search_phase_execution_exception", meta(400), {}), BackendError, "400 search_phase"),
        (ApiError("unavailable", meta(503), {}), BackendUnavailable, "cannot connect"),
    ]


@pytest.mark.parametrize(("err", "kind", "text"), opensearch_errors() + elasticsearch_errors())
def test_client_exceptions_map_to_one_error_each(err, kind, text):
    mapped = client_error(err, "http://h:1 index 'x'", "HINT")
    assert type(mapped) is kind and text in str(mapped) and str(mapped).startswith("http://h:1 index 'x': ")


@pytest.mark.live
@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
def test_a_server_gone_mid_service_is_a_503_and_every_call_maps(engine):
    from fastapi.testclient import TestClient

    from llmql.connectors.registry import open_backend
    from llmql.plugin.service import ServiceConfig, create_app
    from tests.conftest import server_url

    backend = open_backend(engine, server_url(engine))
    dead = open_backend(engine, server_url(engine))
    dead.client = type(backend.client)("http://127.0.0.1:9", max_retries=0)  # the server is gone
    for call in (
        lambda: dead.count("x"),
        lambda: dead.delete("x", ["a"]),
        lambda: list(dead.content_hashes("x")),
        lambda: dead.bm25("x", "kelp", 3),
    ):
        with pytest.raises(BackendUnavailable, match="cannot connect"):
            call()
    client = TestClient(create_app(ServiceConfig(backend=engine, index="x"), None, None, dead))
    response = client.post("/search", json={"query": "kelp", "mode": "bm25"})
    assert response.status_code == 503 and "cannot connect" in response.text and response.headers["retry-after"]
    assert client.get("/health").status_code == 503
