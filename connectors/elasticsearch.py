"""Elasticsearch backend: `dense_vector` (dot_product on unit vectors; HNSW or int8-HNSW) with the top-level
`knn` search, plus BM25, via the official 9.x client. Tested against a real Elasticsearch 9.5 node."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from llmql.connectors.base import BackendError, Filter, Hit, IndexInfo, IndexMismatch, Record, WriteResult
from llmql.connectors.bulk import collect
from llmql.connectors.credentials import check_url, credentials_for
from llmql.connectors.mappings import (
    META_KEY,
    SOURCE_EXCLUDES,
    bm25_query,
    cosine_from_dot_product_score,
    elasticsearch_knn,
    elasticsearch_mapping,
)
from llmql.connectors.opensearch import _hit, _record, _source


class ElasticsearchBackend:
    name = "elasticsearch"

    def __init__(
        self,
        url: str,
        verify_certs: bool = True,
        timeout: float = 60,
        quantization: str = "none",
        shards: int = 1,
        replicas: int = 0,
    ):
        from elasticsearch import Elasticsearch

        self.location = check_url(url)
        auth = credentials_for("elasticsearch")
        kwargs = {}
        if "api_key" in auth:
            kwargs["api_key"] = auth["api_key"]
        elif "username" in auth:
            kwargs["basic_auth"] = (auth["username"], auth["password"])
        self.client = Elasticsearch(
            url,
            verify_certs=verify_certs,
            request_timeout=timeout,
            max_retries=3,
            retry_on_timeout=True,
            retry_on_status=(502, 503, 504),
            **kwargs,
        )
        self.quantization, self.shards, self.replicas = quantization, shards, replicas
        # GET / lives in the rest-root module, which minimal distributions lack: check health instead.
        self._call(self.client.cluster.health)

    def _call(self, fn, *args, **kwargs):
        import elastic_transport
        from elasticsearch import exceptions as ex

        index = kwargs.get("index") or kwargs.get("name")
        where = f"{self.location}" + (f" index {index!r}" if index else "")
        try:
            return fn(*args, **kwargs)
        except ex.AuthenticationException:
            raise BackendError(
                f"{where}: authentication failed (set LLMQL_ELASTICSEARCH_API_KEY or "
                "LLMQL_ELASTICSEARCH_USERNAME/PASSWORD)"
            ) from None
        except ex.AuthorizationException as err:
            raise BackendError(f"{where}: not authorised ({err.message})") from None
        except ex.NotFoundError:
            raise BackendError(f"{where}: not found") from None
        except ex.UnsupportedProductError as err:
            raise BackendError(f"{where}: not an Elasticsearch server ({err.message})") from None
        except ex.ApiError as err:
            raise BackendError(f"{where}: {err.meta.status} {err.message}") from None
        except elastic_transport.TransportError as err:
            raise BackendError(f"{where}: cannot connect ({type(err).__name__}); is the server running?") from None

    def _resolve(self, index: str) -> str | None:
        if not self._call(self.client.indices.exists, index=index):
            return None
        if self._call(self.client.indices.exists_alias, name=index):
            return sorted(self._call(self.client.indices.get_alias, name=index).body)[0]
        return index

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
        body = elasticsearch_mapping(dim, model, self.quantization, shards=self.shards, replicas=self.replicas)
        self._call(self.client.indices.create, index=index, settings=body["settings"], mappings=body["mappings"])
        return IndexInfo(index, dim, model, 0)

    def upsert(self, index: str, records: Sequence[Record]) -> WriteResult:
        import elastic_transport
        from elasticsearch import ApiError, helpers

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
        except (elastic_transport.TransportError, ApiError) as err:
            raise BackendError(f"{where}: bulk write failed ({type(err).__name__}); is the server running?") from None

    def delete(self, index: str, ids: Sequence[str]) -> int:
        from elasticsearch import helpers

        actions = [{"_op_type": "delete", "_index": index, "_id": i} for i in ids]
        return sum(int(ok) for ok, _ in helpers.streaming_bulk(self.client, actions, raise_on_error=False))

    def fetch(
        self, index: str, ids: Sequence[str], with_state: bool = False, with_vector: bool = False
    ) -> dict[str, Record]:
        if not ids:
            return {}
        excludes = ["search_text"] + ([] if with_state else ["ql_state"]) + ([] if with_vector else ["vector"])
        if with_vector:  # Elasticsearch 9 leaves vectors out of _source unless asked (_source_exclude_vectors)
            response = self._call(
                self.client.perform_request,
                "POST",
                f"/{index}/_mget",
                body={"ids": list(ids)},
                params={"_source_exclude_vectors": "false", "_source_excludes": ",".join(excludes)},
                headers={"accept": "application/json", "content-type": "application/json"},
            )
        else:
            response = self._call(self.client.mget, index=index, ids=list(ids), source_excludes=excludes)
        return {d["_id"]: _record(d["_id"], d["_source"]) for d in response["docs"] if d.get("found")}

    def count(self, index: str) -> int:
        return int(self._call(self.client.count, index=index)["count"])

    def bm25(self, index: str, query: str, k: int, filter: Filter | None = None) -> list[Hit]:
        response = self._call(
            self.client.search, index=index, query=bm25_query(query, filter), size=k, source_excludes=SOURCE_EXCLUDES
        )
        return [_hit(h, float(h["_score"])) for h in response["hits"]["hits"]]

    def knn(self, index: str, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[Hit]:
        knn = elasticsearch_knn(np.asarray(vector, dtype=np.float32).tolist(), k, filter)
        response = self._call(self.client.search, index=index, knn=knn, size=k, source_excludes=SOURCE_EXCLUDES)
        return [_hit(h, cosine_from_dot_product_score(float(h["_score"]))) for h in response["hits"]["hits"]]

    def content_hashes(self, index: str) -> Iterator[tuple[str, str]]:
        from elasticsearch import helpers

        for doc in helpers.scan(
            self.client, index=index, query={"query": {"match_all": {}}}, _source=["content_hash"], size=1000
        ):
            yield doc["_id"], doc["_source"].get("content_hash", "")

    def swap_alias(self, alias: str, index: str) -> list[str]:
        previous = []
        if self._call(self.client.indices.exists_alias, name=alias):
            previous = sorted(self._call(self.client.indices.get_alias, name=alias).body)
        elif self._call(self.client.indices.exists, index=alias):
            raise BackendError(f"{self.location}: {alias!r} is an index, not an alias")
        actions = [{"remove": {"index": old, "alias": alias}} for old in previous]
        actions.append({"add": {"index": index, "alias": alias}})
        self._call(self.client.indices.update_aliases, actions=actions)
        return previous

    def drop_index(self, index: str) -> None:
        self._call(self.client.indices.delete, index=index, ignore_unavailable=True)

    def refresh(self, index: str) -> None:
        self._call(self.client.indices.refresh, index=index)

    def close(self) -> None:
        self.client.close()
