"""Elasticsearch backend: `dense_vector` (dot_product on unit vectors; HNSW or int8-HNSW) with the top-level
`knn` search, plus BM25, via the official 9.x client. Tested against a real Elasticsearch 9.5 node."""

from __future__ import annotations

from typing import ClassVar

from llmql.connectors.base import Filter
from llmql.connectors.credentials import credentials_for, hosts
from llmql.connectors.lucene import LuceneBackend
from llmql.connectors.mappings import cosine_from_dot_product_score, elasticsearch_knn, elasticsearch_mapping


class ElasticsearchBackend(LuceneBackend):
    name = "elasticsearch"
    # Elasticsearch 9 leaves dense vectors out of _source unless asked.
    vector_source_params: ClassVar[dict[str, str]] = {"_source_exclude_vectors": "false"}

    def __init__(
        self,
        url: str,
        verify_certs: bool = True,
        timeout: float = 60,
        quantization: str = "none",
        shards: int = 1,
        replicas: int | str = "auto",
    ):
        import elastic_transport
        from elasticsearch import ApiError, Elasticsearch, helpers

        nodes = hosts(url)
        self.location = url
        auth = credentials_for("elasticsearch")
        kwargs = {}
        if "api_key" in auth:
            kwargs["api_key"] = auth["api_key"]
        elif "username" in auth:
            kwargs["basic_auth"] = (auth["username"], auth["password"])
        self.client = Elasticsearch(
            nodes,
            verify_certs=verify_certs,
            request_timeout=timeout,
            max_retries=3,
            retry_on_timeout=True,
            retry_on_status=(502, 503, 504),
            **kwargs,
        )
        self.helpers = helpers
        self.client_errors = (elastic_transport.TransportError, ApiError)
        self.auth_hint = "set LLMQL_ELASTICSEARCH_API_KEY or LLMQL_ELASTICSEARCH_USERNAME/PASSWORD"
        self.quantization, self.shards, self.replicas = quantization, shards, replicas
        # GET / lives in the rest-root module, which minimal distributions lack: check health instead.
        self._call(self.client.cluster.health)

    def _request(self, method, path, body=None, params=None, index=None) -> dict:
        # the 9.x client takes query parameters through the path
        from urllib.parse import urlencode

        if params:
            path = f"{path}?{urlencode(params)}"
        headers = (
            {"accept": "application/json", "content-type": "application/json"}
            if body is not None
            else {"accept": "application/json"}
        )
        response = self._call(self.client.perform_request, method, path, body=body, headers=headers, about=index)
        return response.body

    def _mapping(self, dim: int, model: str, chunking: str | None) -> dict:
        return elasticsearch_mapping(
            dim, model, self.quantization, shards=self.shards, replicas=self.replicas, chunking=chunking
        )

    def _knn_body(self, vector: list[float], k: int, filter: Filter | None, chunked: bool) -> dict:
        return {"knn": elasticsearch_knn(vector, k, filter, chunked=chunked)}

    def _cosine(self, score: float) -> float:
        return cosine_from_dot_product_score(score)
