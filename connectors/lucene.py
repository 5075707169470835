"""What OpenSearch and Elasticsearch share: the same REST API for indexes, aliases, _bulk, _mget, _count and
_search, reached through each engine's official client (its transport, retries, auth and bulk helpers).

An engine module subclasses `LuceneBackend` and supplies only what differs: the client, its error mapping,
the vector mapping, the kNN request and how a kNN score maps back to cosine.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from llmql.connectors.base import (
    BackendError,
    BackendUnavailable,
    Filter,
    Hit,
    IndexInfo,
    Passage,
    Record,
    UnknownIndex,
    WriteResult,
    check_reopened,
    unknown_index,
)
from llmql.connectors.bulk import collect
from llmql.connectors.filters import LUCENE_KINDS, Kinds, check_fields, check_range_kinds, fields_of, parse_filter
from llmql.connectors.mappings import META_KEY, PASSAGES, SOURCE_EXCLUDES, bm25_query, passage_span

log = logging.getLogger(__name__)
WRITE_RETRIES = 6  # backoff 1, 2, 4, 8, 16, 30 s: about a minute for a cluster to move a failed node's shards


def _vector_json(vector) -> list[float] | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tolist()


def _state_json(state: bytes | None) -> str | None:
    return None if state is None else base64.b64encode(state).decode("ascii")


def source_of(r: Record) -> dict:
    """A document's _source; a chunked one carries its passages as nested objects instead of one vector."""
    source = {
        "title": r.title,
        "text": r.text,
        "content_hash": r.content_hash,
        "fields": r.fields,
    }
    if r.passages:
        source[PASSAGES] = [
            {"start": p.start, "end": p.end, "vector": _vector_json(p.vector), "ql_state": _state_json(p.end_states)}
            for p in r.passages
        ]
    else:
        source.update(vector=_vector_json(r.vector), ql_state=_state_json(r.end_states))
    return source


def _array(value) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float32)


def _bytes(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None


def record_of(doc_id: str, src: dict) -> Record:
    passages = tuple(
        Passage(int(p["start"]), int(p["end"]), _array(p.get("vector")), _bytes(p.get("ql_state")))
        for p in src.get(PASSAGES) or ()
    )
    return Record(
        doc_id,
        src.get("title", ""),
        src.get("text", ""),
        vector=_array(src.get("vector")),
        content_hash=src.get("content_hash", ""),
        end_states=_bytes(src.get("ql_state")),
        fields=src.get("fields") or {},
        passages=passages,
    )


def hit_of(h: dict, score: float) -> Hit:
    src = h.get("_source", {})
    return Hit(h["_id"], score, src.get("title", ""), src.get("text", ""), src.get("fields") or {}, passage_span(h))


def client_error(err: BaseException, where: str, auth_hint: str) -> BackendError:
    """The one mapping of either client's exceptions to llmql's errors. opensearch-py puts the HTTP status on
    `status_code` ('N/A' for a connection failure), elasticsearch on `meta.status` (its transport errors have
    none); no status means the server was not reached."""
    meta = getattr(err, "meta", None)
    status = getattr(meta, "status", None) if meta is not None else getattr(err, "status_code", None)
    reason = getattr(err, "message", None) or getattr(err, "error", None) or type(err).__name__
    if type(err).__name__ == "UnsupportedProductError":
        return BackendError(f"{where}: not the expected search engine ({reason})")
    if not isinstance(status, int) or status in (502, 503, 504):
        return BackendUnavailable(f"{where}: cannot connect ({type(err).__name__}); is the server running?")
    if status == 401:
        return BackendError(f"{where}: authentication failed ({auth_hint})")
    if status == 403:
        return BackendError(f"{where}: not authorised ({reason})")
    if status == 404:
        return UnknownIndex(f"{where}: not found")
    return BackendError(f"{where}: {status} {reason}")


class LuceneBackend:
    name = ""
    location = ""
    client: Any = None
    helpers: Any = None  # the client package's helpers module (streaming_bulk, scan)
    client_errors: tuple[type[BaseException], ...] = ()  # the client's exception bases, mapped by client_error
    auth_hint = ""  # which variables hold credentials, for the authentication message
    vector_source_params: ClassVar[dict[str, str]] = {}  # extra _mget params that return vectors from _source

    @contextmanager
    def _errors(self, index: str | None = None):
        """Every client call runs inside this: the client's exceptions become BackendError naming URL and index."""
        where = self.location + (f" index {index!r}" if index else "")
        try:
            yield
        except self.client_errors as err:
            raise client_error(err, where, self.auth_hint) from None

    def _call(self, fn, *args, **kwargs):
        """Run a client call under `_errors`; the index named is the call's index= or name=, or about= (which is
        not passed on)."""
        index = kwargs.pop("about", None) or kwargs.get("index") or kwargs.get("name")
        with self._errors(index):
            return fn(*args, **kwargs)

    # -- what an engine supplies ------------------------------------------------------------------------------

    def _mapping(self, dim: int, model: str, chunking: str | None) -> dict:
        raise NotImplementedError

    def _knn_body(self, vector: list[float], k: int, filter: Filter | None, chunked: bool) -> dict:
        raise NotImplementedError

    def _cosine(self, score: float) -> float:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, body: Any = None, params: dict | None = None, index: str | None = None
    ) -> dict:
        headers = {"accept": "application/json", "content-type": "application/json"}
        response = self._call(
            self.client.transport.perform_request,
            method,
            path,
            params=params or {},
            body=body,
            headers=headers,
            about=index,
        )
        return getattr(response, "body", response)

    def resolve(self, index: str) -> str | None:
        """The concrete index behind `index` (itself, or the one an alias points to), or None."""
        if not self._call(self.client.indices.exists, index=index):
            return None
        if self._call(self.client.indices.exists_alias, name=index):
            return sorted(self._request("GET", f"/_alias/{index}", index=index))[0]
        return index

    def _names(self) -> list[str]:
        """The indexes and aliases on the cluster, for the message that names what exists."""
        indices = self._request("GET", "/_cat/indices", params={"format": "json", "h": "index"})
        aliases = self._request("GET", "/_cat/aliases", params={"format": "json", "h": "alias"})
        return [row["index"] for row in indices] + [row["alias"] for row in aliases]

    def index_info(self, index: str) -> IndexInfo:
        name = self.resolve(index)
        if name is None:
            raise unknown_index(self.location, index, self._names())
        mapping = self._request("GET", f"/{name}/_mapping", index=name)[name]["mappings"]
        meta = mapping.get("_meta", {}).get(META_KEY, {})
        held = tuple(sorted(mapping.get("properties", {}).get("fields", {}).get("properties", {})))  # as mapped
        count, chunking = self.count(name), meta.get("chunking")
        return IndexInfo(name, int(meta.get("dim", -1)), meta.get("model", ""), count, chunking, held)

    def open_index(
        self,
        index: str,
        dim: int,
        model: str,
        create: bool = True,
        fields: tuple[str, ...] = (),
        chunking: str | None = None,
    ) -> IndexInfo:  # metadata fields are mapped as they arrive (numbers, dates and keywords: filterable alike)
        if self.resolve(index) is not None:
            return check_reopened(self.location, self.index_info(index), dim, model, chunking)
        if not create:
            raise unknown_index(self.location, index, self._names())
        self._request("PUT", f"/{index}", body=self._mapping(dim, model, chunking), index=index)
        return IndexInfo(index, dim, model, 0, chunking)

    def upsert(self, index: str, records: Sequence[Record], fresh: bool = False) -> WriteResult:
        """One bulk request; items the engine refuses for a moment (a shard without its primary while a failed
        node's replica takes over, 429, 5xx) are sent again with backoff, up to `WRITE_RETRIES` times, before the
        batch is given up with an error (the sync then stops, and --resume redoes that batch)."""
        # _bulk "index" replaces by _id without a search: `fresh` changes nothing here
        where, result, pending = f"{self.location} index {index!r}", WriteResult(), list(records)
        for attempt in range(WRITE_RETRIES + 1):
            actions = [{"_op_type": "index", "_index": index, "_id": r.id, "_source": source_of(r)} for r in pending]
            stream = self.helpers.streaming_bulk(
                self.client,
                actions,
                chunk_size=max(1, len(actions)),
                max_retries=5,
                initial_backoff=1,
                max_backoff=30,
                raise_on_error=False,
            )
            with self._errors(index):
                done, transient = collect(stream)
            result.written += done.written
            result.failed += done.failed
            if not transient:
                return result
            first = next(iter(transient.values()))
            if attempt == WRITE_RETRIES:
                raise BackendError(
                    f"{where}: {len(transient)} document(s) not accepted after {WRITE_RETRIES} retries ({first}); "
                    "the batch will be retried by --resume"
                )
            log.warning("%s: %d document(s) refused for now (%s); sending them again", where, len(transient), first)
            time.sleep(min(30.0, 2.0**attempt))
            pending = [r for r in pending if r.id in transient]
        return result

    def delete(self, index: str, ids: Sequence[str]) -> int:
        actions = [{"_op_type": "delete", "_index": index, "_id": i} for i in ids]
        stream = self.helpers.streaming_bulk(self.client, actions, raise_on_error=False, max_retries=5)
        with self._errors(index):
            return sum(int(ok) for ok, _ in stream)

    def fetch(
        self, index: str, ids: Sequence[str], with_state: bool = False, with_vector: bool = False
    ) -> dict[str, Record]:
        if not ids:
            return {}
        excludes = ["search_text"] + ([] if with_state else ["ql_state", f"{PASSAGES}.ql_state"])
        excludes += [] if with_vector else ["vector", f"{PASSAGES}.vector"]
        params = {"_source_excludes": ",".join(excludes), **(self.vector_source_params if with_vector else {})}
        response = self._request("POST", f"/{index}/_mget", body={"ids": list(ids)}, params=params, index=index)
        return {d["_id"]: record_of(d["_id"], d["_source"]) for d in response["docs"] if d.get("found")}

    def count(self, index: str) -> int:
        return int(self._request("GET", f"/{index}/_count", index=index)["count"])

    def _search(self, index: str, body: dict) -> list[dict]:
        body = {**body, "_source": {"excludes": SOURCE_EXCLUDES}}
        return self._request("POST", f"/{index}/_search", body=body, index=index)["hits"]["hits"]

    def _layout(self, index: str, fields: frozenset[str] = frozenset(), fresh: bool = False) -> tuple[Kinds, bool]:
        """(metadata fields with the kinds of value their mapping compares, chunked) of the index behind a name;
        cached per name, read again when asked about a field it has not seen or after a failed search (an alias
        may have moved)."""
        cache = vars(self).setdefault("_layouts", {})  # per backend object: name -> (kinds, chunked)
        known = cache.get(index)
        if fresh or known is None or not fields <= set(known[0]):
            mapping = self._request("GET", f"/{index}/_mapping", index=index)
            kinds: Kinds = {}
            chunked = False
            for body in mapping.values():
                properties = body["mappings"].get("properties", {})
                for name, prop in properties.get("fields", {}).get("properties", {}).items():
                    kind = LUCENE_KINDS.get(prop.get("type", ""))
                    kinds.setdefault(name, set()).update([kind] if kind else [])
                chunked = chunked or PASSAGES in properties
            known = cache[index] = (kinds, chunked)
        return known

    def _check_filter(self, index: str, filter: Filter | None) -> None:
        """A filter naming a field no document of the index has, or a range its field's values cannot compare
        with, is refused (a mapping read, cached per index)."""
        clauses = parse_filter(filter)
        if clauses:
            kinds, _ = self._layout(index, frozenset(fields_of(clauses)))
            check_fields(clauses, set(kinds), f"{self.location} index {index!r}")
            check_range_kinds(clauses, kinds, f"{self.location} index {index!r}")

    def bm25(self, index: str, query: str, k: int, filter: Filter | None = None) -> list[Hit]:
        self._check_filter(index, filter)
        hits = self._search(index, {"size": k, "query": bm25_query(query, filter)})
        return [hit_of(h, float(h["_score"])) for h in hits]

    def knn(self, index: str, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[Hit]:
        self._check_filter(index, filter)
        values = np.asarray(vector, dtype=np.float32).tolist()
        for attempt in range(2):
            _, chunked = self._layout(index, fresh=attempt > 0)
            body = {"size": k, **self._knn_body(values, k, filter, chunked)}
            try:
                hits = self._search(index, body)
                break
            except BackendError:  # an alias moved to a generation of the other layout: read the mapping again
                if attempt:
                    raise
        return [hit_of(h, self._cosine(float(h["_score"]))) for h in hits]

    def content_hashes(self, index: str) -> Iterator[tuple[str, str]]:
        scan = self.helpers.scan(
            self.client, index=index, query={"query": {"match_all": {}}}, _source=["content_hash"], size=1000
        )
        with self._errors(index):
            for doc in scan:
                yield doc["_id"], doc["_source"].get("content_hash", "")

    def swap_alias(self, alias: str, index: str) -> list[str]:
        previous = []
        if self._call(self.client.indices.exists_alias, name=alias):
            previous = sorted(self._request("GET", f"/_alias/{alias}", index=alias))
        elif self._call(self.client.indices.exists, index=alias):
            raise BackendError(f"{self.location}: {alias!r} is an index, not an alias")
        actions = [{"remove": {"index": old, "alias": alias}} for old in previous]
        actions.append({"add": {"index": index, "alias": alias}})
        self._request("POST", "/_aliases", body={"actions": actions}, index=index)  # one atomic request
        return previous

    def drop_index(self, index: str) -> None:
        self._request("DELETE", f"/{index}", params={"ignore_unavailable": "true"}, index=index)

    def refresh(self, index: str) -> None:
        self._request("POST", f"/{index}/_refresh", index=index)

    def close(self) -> None:
        self.client.close()
