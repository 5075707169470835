"""The ready JSON in plugin/blueprints: each request body an engine would send (OpenSearch ml-commons connectors
with their pre-process functions' parameters, Elasticsearch `custom` inference endpoints with their template
variables) is rendered as the engine renders it, replayed against a running `llmql serve`, and the answer read
with the paths the blueprint declares. The engines' own plugins could not be run here (see the README)."""

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

BLUEPRINTS = Path(__file__).resolve().parents[2] / "plugin" / "blueprints"
DOCS = ["Kelp forests grow in cold coastal water.", 'A "quoted" lagoon of kelp.', "Volcanic soil is rich."]


def load(name: str) -> dict:
    return json.loads((BLUEPRINTS / name).read_text())


def every_file_is_json():
    return sorted(p.name for p in BLUEPRINTS.glob("*.json"))


@pytest.mark.parametrize("name", every_file_is_json())
def test_blueprints_are_json(name):
    assert isinstance(json.loads((BLUEPRINTS / name).read_text()), dict)


def test_the_cluster_settings_trust_every_connectors_url():
    settings = load("opensearch-cluster-settings.json")["persistent"]
    trusted = settings["plugins.ml_commons.trusted_connector_endpoints_regex"]
    assert settings["plugins.ml_commons.connector.private_ip_enabled"] is True  # the default URL is loopback
    connectors = [load(n) for n in every_file_is_json() if n.endswith("-connector.json")]
    assert len(connectors) == 3
    for connector in connectors:
        url = connector["actions"][0]["url"].replace("${parameters.endpoint}", connector["parameters"]["endpoint"])
        assert any(re.fullmatch(pattern, url) for pattern in trusted), url


def render_opensearch(connector: dict, service: str, params: dict) -> tuple[str, str]:
    """(url, body) as ml-commons renders an action: ${parameters.x} from the connector's parameters, then from
    those the pre-process function produced (already JSON where they stand for arrays)."""
    action = connector["actions"][0]
    values = {**connector["parameters"], "endpoint": service, **params}

    def fill(text: str) -> str:
        return re.sub(r"\$\{parameters\.(\w+)\}", lambda m: str(values[m.group(1)]), text)

    return fill(action["url"]), fill(action["request_body"])


@pytest.mark.parametrize("side", ["passage", "query"])
def test_opensearch_embedding_connector_request(service, ql_export, side):
    from llmql.export.runtime import OnnxEncoder

    connector = load(f"opensearch-{side}-embedding-connector.json")
    assert connector["actions"][0]["pre_process_function"] == "connector.pre_process.openai.embedding"
    url, body = render_opensearch(connector, service, {"input": json.dumps(DOCS)})  # text_docs -> input
    answer = httpx.post(url, content=body, headers=connector["actions"][0]["headers"])
    assert answer.status_code == 200, answer.text
    vectors = [d["embedding"] for d in answer.json()["data"]]  # what the openai post-process function reads
    encoder = OnnxEncoder.from_dir(ql_export)
    expected = encoder.encode_passages(DOCS) if side == "passage" else encoder.encode_queries(DOCS)
    np.testing.assert_allclose(np.array(vectors), expected, atol=1e-5)


def test_opensearch_rerank_connector_request(service):
    connector = load("opensearch-rerank-connector.json")
    assert connector["actions"][0]["pre_process_function"] == "connector.pre_process.cohere.rerank"
    query = 'kelp \\"lagoon\\"'  # ml-commons escapes the query text into the JSON string it stands in
    params = {"query": query, "documents": json.dumps(DOCS), "top_n": len(DOCS)}
    url, body = render_opensearch(connector, service, params)
    answer = httpx.post(url, content=body, headers=connector["actions"][0]["headers"])
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]  # the cohere post-process function puts them back in input order by index
    assert sorted(r["index"] for r in results) == [0, 1, 2] and all(r["relevance_score"] > 0 for r in results)
    pipeline = load("opensearch-rerank-pipeline.json")
    assert pipeline["response_processors"][0]["rerank"]["context"]["document_fields"] == ["text"]


def render_elasticsearch(endpoint: dict, service: str, query: str | None) -> tuple[str, str]:
    """(url, body) as the `custom` service renders it: ${input} a JSON array of strings, ${query} a JSON string."""
    settings = endpoint["service_settings"]
    body = settings["request"].replace("${input}", json.dumps(DOCS))
    if query is not None:
        body = body.replace("${query}", json.dumps(query))
    return settings["url"].replace("http://127.0.0.1:8080", service), body


def json_path(document, path: str) -> list:
    """The `$.a[*].b[*]` paths the blueprints use, flattened."""
    values = [document]
    for part in path.removeprefix("$.").split("."):
        name, many = part.removesuffix("[*]"), part.endswith("[*]")
        values = [v[name] for v in values] if name else values
        values = [x for v in values for x in v] if many else values
    return values


def test_elasticsearch_embedding_endpoint_request(service):
    endpoint = load("elasticsearch-embedding-endpoint.json")
    url, body = render_elasticsearch(endpoint, service, None)
    answer = httpx.post(url, content=body, headers=endpoint["service_settings"]["headers"])
    assert answer.status_code == 200, answer.text
    flat = json_path(answer.json(), endpoint["service_settings"]["response"]["json_parser"]["text_embeddings"])
    assert len(flat) == 3 * len(answer.json()["data"][0]["embedding"])


def test_elasticsearch_rerank_endpoint_request(service):
    endpoint = load("elasticsearch-rerank-endpoint.json")
    url, body = render_elasticsearch(endpoint, service, 'kelp "lagoon"')
    answer = httpx.post(url, content=body, headers=endpoint["service_settings"]["headers"])
    assert answer.status_code == 200, answer.text
    parser = endpoint["service_settings"]["response"]["json_parser"]
    indexes, scores = (
        json_path(answer.json(), parser["reranked_index"]),
        json_path(answer.json(), parser["relevance_score"]),
    )
    assert sorted(indexes) == [0, 1, 2] and scores == sorted(scores, reverse=True)
