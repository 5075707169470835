"""OpenSearch backend: `knn_vector` (Lucene HNSW, inner product on unit vectors) plus BM25, via opensearch-py.

Bulk writes use the client's `streaming_bulk` (retries HTTP 429 item by item with backoff); the transport
retries 502/503/504 and timeouts. Tested against a real OpenSearch 3.5 node with the k-NN plugin.
"""

from __future__ import annotations

from llmql.connectors.base import BackendError, Filter
from llmql.connectors.credentials import check_url, credentials_for
from llmql.connectors.lucene import LuceneBackend
from llmql.connectors.mappings import cosine_from_lucene_inner_product, opensearch_knn_query, opensearch_mapping


class OpenSearchBackend(LuceneBackend):
    name = "opensearch"

    def __init__(self, url: str, verify_certs: bool = True, timeout: float = 60, shards: int = 1, replicas: int = 0):
        from opensearchpy import OpenSearch, helpers
        from opensearchpy import exceptions as ex

        self.location = check_url(url)
        auth = credentials_for("opensearch")
        self.client = OpenSearch(
            hosts=[url],
            http_auth=(auth["username"], auth["password"]) if "username" in auth else None,
            verify_certs=verify_certs,
            ssl_show_warn=verify_certs,
            timeout=timeout,
            max_retries=3,
            retry_on_timeout=True,
            retry_on_status=(502, 503, 504),
        )
        self.helpers = helpers
        self.transport_errors = (ex.ConnectionError, ex.ConnectionTimeout, ex.TransportError)
        self.shards, self.replicas = shards, replicas
        self._call(self.client.info)

    def _call(self, fn, *args, **kwargs):
        from opensearchpy import exceptions as ex

        index = kwargs.pop("about", None) or kwargs.get("index") or kwargs.get("name")
        where = f"{self.location}" + (f" index {index!r}" if index else "")
        try:
            return fn(*args, **kwargs)
        except ex.AuthenticationException:
            raise BackendError(f"{where}: authentication failed (set LLMQL_OPENSEARCH_USERNAME/PASSWORD)") from None
        except ex.AuthorizationException as err:
            raise BackendError(f"{where}: not authorised ({err.error})") from None
        except ex.ConnectionError as err:
            raise BackendError(f"{where}: cannot connect ({type(err).__name__}); is the server running?") from None
        except ex.NotFoundError:
            raise BackendError(f"{where}: not found") from None
        except ex.TransportError as err:
            raise BackendError(f"{where}: {err.status_code} {err.error}") from None

    def _mapping(self, dim: int, model: str) -> dict:
        return opensearch_mapping(dim, model, shards=self.shards, replicas=self.replicas)

    def _knn_body(self, vector: list[float], k: int, filter: Filter | None) -> dict:
        return {"query": opensearch_knn_query(vector, k, filter)}

    def _cosine(self, score: float) -> float:
        return cosine_from_lucene_inner_product(score)
