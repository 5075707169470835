"""OpenSearch backend: `knn_vector` (Lucene HNSW, inner product on unit vectors) plus BM25, via opensearch-py.

Bulk writes use the client's `streaming_bulk` (retries HTTP 429 item by item with backoff); the transport
retries 502/503/504 and timeouts. Tested against a real OpenSearch 3.5 node with the k-NN plugin.
"""

from __future__ import annotations

from llmql.connectors.base import Filter
from llmql.connectors.credentials import credentials_for, hosts
from llmql.connectors.lucene import LuceneBackend
from llmql.connectors.mappings import cosine_from_lucene_inner_product, opensearch_knn_query, opensearch_mapping


class OpenSearchBackend(LuceneBackend):
    name = "opensearch"

    def __init__(
        self, url: str, verify_certs: bool = True, timeout: float = 60, shards: int = 1, replicas: int | str = "auto"
    ):
        from opensearchpy import OpenSearch, helpers
        from opensearchpy import exceptions as ex

        nodes = hosts(url)
        self.location = url
        auth = credentials_for("opensearch")
        self.client = OpenSearch(
            hosts=nodes,
            http_auth=(auth["username"], auth["password"]) if "username" in auth else None,
            verify_certs=verify_certs,
            ssl_show_warn=verify_certs,
            timeout=timeout,
            max_retries=3,
            retry_on_timeout=True,
            retry_on_status=(502, 503, 504),
        )
        self.helpers = helpers
        self.client_errors = (ex.TransportError,)
        self.auth_hint = "set LLMQL_OPENSEARCH_USERNAME/PASSWORD"
        self.shards, self.replicas = shards, replicas
        self._call(self.client.info)

    def _mapping(self, dim: int, model: str, chunking: str | None) -> dict:
        return opensearch_mapping(dim, model, shards=self.shards, replicas=self.replicas, chunking=chunking)

    def _knn_body(self, vector: list[float], k: int, filter: Filter | None, chunked: bool) -> dict:
        return {"query": opensearch_knn_query(vector, k, filter, chunked)}

    def _cosine(self, score: float) -> float:
        return cosine_from_lucene_inner_product(score)
