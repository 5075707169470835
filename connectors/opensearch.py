"""OpenSearch backend: `knn_vector` (Lucene HNSW, inner product on unit vectors) plus BM25, via opensearch-py.

Bulk writes use the client's `streaming_bulk` (retries HTTP 429 item by item with backoff); the transport
retries 502/503/504 and timeouts. Tested against a real OpenSearch 3.5 node with the k-NN plugin.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence

import numpy as np

from llmql.connectors.base import BackendError, Filter, Hit, IndexInfo, IndexMismatch, Record, WriteResult
from llmql.connectors.bulk import collect
from llmql.connectors.credentials import check_url, credentials_for
from llmql.connectors.mappings import (
    META_KEY,
    SOURCE_EXCLUDES,
    bm25_query,
    cosine_from_lucene_inner_product,
    opensearch_knn_query,
    opensearch_mapping,
)


def _source(r: Record) -> dict:
    return {
        "title": r.title,
        "text": r.text,
        "vector": None if r.vector is None else np.asarray(r.vector, dtype=np.float32).tolist(),
        "content_hash": r.content_hash,
        "ql_state": None if r.ql_state is None else base64.b64encode(r.ql_state).decode("ascii"),
        "fields": r.fields,
    }


def _record(doc_id: str, src: dict) -> Record:
    state = src.get("ql_state")
    return Record(
        doc_id,
        src.get("title", ""),
        src.get("text", ""),
        vector=np.asarray(src["vector"], dtype=np.float32) if src.get("vector") is not None else None,
        content_hash=src.get("content_hash", ""),
        ql_state=base64.b64decode(state) if state else None,
        fields=src.get("fields") or {},
    )


def _hit(h: dict, score: float) -> Hit:
    src = h.get("_source", {})
    return Hit(h["_id"], score, src.get("title", ""), src.get("text", ""), src.get("fields") or {})


class OpenSearchBackend:
    name = "opensearch"

    def __init__(
        self,
        url: str,
        verify_certs: bool = True,
        timeout: float = 60,
        ef_search: int | None = None,
        shards: int = 1,
        replicas: int = 0,
    ):
        from opensearchpy import OpenSearch

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
        self.shards, self.replicas = shards, replicas
        self._call(self.client.info)

    def _call(self, fn, *args, **kwargs):
        """Run a client call, turning transport failures into one clear message naming URL and index."""
        from opensearchpy import exceptions as ex

        index = kwargs.get("index") or kwargs.get("name")
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

    def _resolve(self, index: str) -> str | None:
        """The concrete index behind `index` (itself, or the one an alias points to), or None."""
        if self._call(self.client.indices.exists, index=index):
            aliased = self._call(self.client.indices.exists_alias, name=index)
            if aliased:
                return sorted(self._call(self.client.indices.get_alias, name=index))[0]
            return index
        return None

    def open_index(self, index: str, dim: int, model: str, create: bool = True) -> IndexInfo:
        name = self._resolve(index)
        if name is not None:
            mapping = self._call(self.client.indices.get_mapping, index=name)[name]["mappings"]
            meta = mapping.get("_meta", {}).get(META_KEY, {})
            if meta.get("dim") != dim or meta.get("model") != model:
                raise IndexMismatch(
                    f"{self.location} index {name!r}: holds {meta.get('dim')}-d vectors of model "
                    f"{meta.get('model')!r}, not {dim}-d of {model!r}; use --recreate or another --index"
                )
            return IndexInfo(name, dim, model, self.count(name))
        if not create:
            raise BackendError(f"{self.location}: no index or alias named {index!r}")
        body = opensearch_mapping(dim, model, shards=self.shards, replicas=self.replicas)
        self._call(self.client.indices.create, index=index, body=body)
        return IndexInfo(index, dim, model, 0)

    def upsert(self, index: str, records: Sequence[Record]) -> WriteResult:
        from opensearchpy import exceptions as ex
        from opensearchpy import helpers

        actions = [{"_op_type": "index", "_index": index, "_id": r.id, "_source": _source(r)} for r in records]
        where = f"{self.location} index {index!r}"
        stream = helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=max(1, len(actions)),
            max_retries=5,
            initial_backoff=1,
            max_backoff=30,
            raise_on_error=False,
        )
        try:
            return collect(stream, where)
        except (ex.ConnectionError, ex.ConnectionTimeout, ex.TransportError) as err:
            raise BackendError(f"{where}: bulk write failed ({type(err).__name__}); is the server running?") from None

    def delete(self, index: str, ids: Sequence[str]) -> int:
        from opensearchpy import helpers

        actions = [{"_op_type": "delete", "_index": index, "_id": i} for i in ids]
        deleted = 0
        for ok, _ in helpers.streaming_bulk(self.client, actions, raise_on_error=False, max_retries=5):
            deleted += int(ok)
        return deleted

    def fetch(
        self, index: str, ids: Sequence[str], with_state: bool = False, with_vector: bool = False
    ) -> dict[str, Record]:
        if not ids:
            return {}
        excludes = ["search_text"] + ([] if with_state else ["ql_state"]) + ([] if with_vector else ["vector"])
        response = self._call(
            self.client.mget, index=index, body={"ids": list(ids)}, params={"_source_excludes": ",".join(excludes)}
        )
        return {d["_id"]: _record(d["_id"], d["_source"]) for d in response["docs"] if d.get("found")}

    def count(self, index: str) -> int:
        return int(self._call(self.client.count, index=index)["count"])

    def bm25(self, index: str, query: str, k: int, filter: Filter | None = None) -> list[Hit]:
        body = {"size": k, "query": bm25_query(query, filter), "_source": {"excludes": SOURCE_EXCLUDES}}
        response = self._call(self.client.search, index=index, body=body)
        return [_hit(h, float(h["_score"])) for h in response["hits"]["hits"]]

    def knn(self, index: str, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[Hit]:
        body = {
            "size": k,
            "query": opensearch_knn_query(np.asarray(vector, dtype=np.float32).tolist(), k, filter),
            "_source": {"excludes": SOURCE_EXCLUDES},
        }
        response = self._call(self.client.search, index=index, body=body)
        return [_hit(h, cosine_from_lucene_inner_product(float(h["_score"]))) for h in response["hits"]["hits"]]

    def content_hashes(self, index: str) -> Iterator[tuple[str, str]]:
        from opensearchpy import helpers

        for doc in helpers.scan(
            self.client, index=index, query={"query": {"match_all": {}}}, _source=["content_hash"], size=1000
        ):
            yield doc["_id"], doc["_source"].get("content_hash", "")

    def swap_alias(self, alias: str, index: str) -> list[str]:
        previous = []
        if self._call(self.client.indices.exists_alias, name=alias):
            previous = sorted(self._call(self.client.indices.get_alias, name=alias))
        elif self._call(self.client.indices.exists, index=alias):
            raise BackendError(f"{self.location}: {alias!r} is an index, not an alias")
        actions = [{"remove": {"index": old, "alias": alias}} for old in previous]
        actions.append({"add": {"index": index, "alias": alias}})
        self._call(self.client.indices.update_aliases, body={"actions": actions})
        return previous

    def drop_index(self, index: str) -> None:
        self._call(self.client.indices.delete, index=index, params={"ignore_unavailable": "true"})

    def refresh(self, index: str) -> None:
        self._call(self.client.indices.refresh, index=index)

    def close(self) -> None:
        self.client.close()
