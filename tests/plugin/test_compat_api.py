"""`/v1/embeddings` through the official `openai` client and `/v1/rerank` through the official `cohere` client,
against a real running `llmql serve` (uvicorn on a local port), and their refusals of bad input."""

import httpx
import numpy as np
import pytest

from llmql.export.runtime import OnnxEncoder, OnnxQLScorer

openai = pytest.importorskip("openai", reason="the openai client is a test dependency (pip install -e .[dev])")
cohere = pytest.importorskip("cohere", reason="the cohere client is a test dependency (pip install -e .[dev])")


def test_openai_client_gets_the_encoders_vectors(service, ql_export):
    client = openai.OpenAI(base_url=f"{service}/v1", api_key="unused")
    encoder = OnnxEncoder.from_dir(ql_export)
    texts = ["kelp forests in cold water", "volcanic soil"]
    default = client.embeddings.create(model="llmql", input=texts)  # the client asks for base64 and decodes it
    floats = client.embeddings.create(model="llmql", input=texts, encoding_format="float")
    expected = encoder.encode_queries(texts)
    for response in (default, floats):
        assert [d.index for d in response.data] == [0, 1] and response.model == "llmql"
        np.testing.assert_allclose(np.array([d.embedding for d in response.data]), expected, atol=1e-6)
        assert response.usage.prompt_tokens == sum(len(r) for r in encoder.tokenizer.queries(texts))
    passage = client.embeddings.create(model="llmql", input="volcanic soil", extra_body={"input_type": "passage"})
    np.testing.assert_allclose(passage.data[0].embedding, encoder.encode_passages(["volcanic soil"])[0], atol=1e-6)
    assert [m.id for m in client.models.list().data] == ["llmql"]


def test_openai_client_sees_bad_requests_refused(service):
    client = openai.OpenAI(base_url=f"{service}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.UnprocessableEntityError, match="1 to 256 texts"):
        client.embeddings.create(model="llmql", input=["x"] * 257)
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="llmql", input="x", dimensions=7)
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="llmql", input=[[1, 2, 3]])  # token arrays are not taken


def test_cohere_client_reranks_by_query_likelihood(service, ql_export):
    client = cohere.Client(base_url=service, api_key="unused")
    docs = ["Kelp forests grow in cold coastal water.", "Volcanic soil is rich.", "A lagoon of kelp."]
    response = client.rerank(model="llmql", query="kelp lagoon", documents=docs, top_n=2, return_documents=True)
    expected = OnnxQLScorer.from_dir(ql_export).score("kelp lagoon", docs)
    assert [r.index for r in response.results] == list(np.argsort(-expected, kind="stable")[:2])
    assert all(0 < r.relevance_score <= 1 for r in response.results)
    assert response.results[0].document.text == docs[response.results[0].index]


def test_rerank_of_indexed_ids_uses_the_cached_states(service, ql_export):
    backend_docs = ["d1", "d2", "d3"]
    body = {"query": "kelp lagoon", "documents": [{"id": i, "text": "ignored"} for i in backend_docs]}
    answer = httpx.post(f"{service}/v1/rerank", json=body).json()
    assert answer["meta"]["ql_path"] == "cached" and sorted(r["index"] for r in answer["results"]) == [0, 1, 2]
    unknown = {"query": "kelp", "documents": [{"id": "nope", "text": "kelp"}]}
    assert httpx.post(f"{service}/v1/rerank", json=unknown).json()["meta"]["ql_path"] == "full"
    for bad in ({"query": "kelp", "documents": []}, {"query": " ", "documents": ["a"]}, {"query": "k", "docs": ["a"]}):
        assert httpx.post(f"{service}/v1/rerank", json=bad).status_code == 422
    assert httpx.post(f"{service}/v1/rerank", json={"query": "k", "documents": ["a"], "model": "x"}).status_code == 404
