"""The embedded default backend: LanceDB in a local directory, no server.

Why LanceDB: one well-kept library gives both halves of hybrid search in-process and persisted to a directory:
a native BM25 full-text index (stemming, stop words) and vector search with approximate indexes (IVF-HNSW-SQ).
It upserts by key (`merge_insert`), filters with SQL predicates before ranking, and tables carry schema
metadata where the model identity and dimension are kept. The alternatives considered (tantivy plus an HNSW
library) need two stores kept consistent by hand.

Below `ann_min_rows` documents the vector search is exact (a flat scan of a few thousand vectors is faster than
any index and loses nothing); above it an IVF-HNSW-SQ index is built on refresh.

A chunked index keeps a row per passage, keyed (id, passage): the document's title and text (and so its BM25
text) on passage 0 only, its metadata on every row (filters act before ranking). A document is written in one
`merge_insert` that also deletes its passages no longer there, so a shorter new version leaves no orphan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from llmql.connectors.alias_file import point_alias, read_aliases
from llmql.connectors.base import (
    BackendError,
    Filter,
    Hit,
    IndexInfo,
    Record,
    WriteResult,
    check_directory_name,
    check_reopened,
    unknown_index,
)
from llmql.connectors.filters import Kinds, check_fields, check_range_kinds, parse_filter, sql_filter
from llmql.connectors.lance_rows import field_columns, ids_in, records_of_passage_rows, rows_of, table_schema
from llmql.train.core.chunking import max_per_key

_check_name = check_directory_name  # index names become directory names


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, directory: str | Path, ann_min_rows: int = 20_000):
        import lancedb

        self.location = str(directory)
        self.root = Path(directory)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = lancedb.connect(str(self.root))
        self.ann_min_rows = ann_min_rows

    # -- helpers --------------------------------------------------------------------------------------------
    def _tables(self) -> list[str]:
        return list(self.db.list_tables().tables)

    def _aliases(self) -> dict[str, str]:
        return read_aliases(self.root)

    def _resolve(self, index: str) -> str:
        return self._aliases().get(index, index)

    def resolve(self, index: str) -> str | None:
        name = self._resolve(index)
        return name if name in self._tables() else None

    def _table(self, index: str):
        _check_name(index)
        name = self._resolve(index)
        try:
            return self.db.open_table(name)
        except (FileNotFoundError, ValueError):
            raise unknown_index(self.location, index, [*self._tables(), *self._aliases()]) from None

    @staticmethod
    def _declared_fields(table) -> list[str] | None:
        """The metadata fields an open table was created for (None: created before fields were recorded)."""
        raw = (table.schema.metadata or {}).get(b"llmql.fields")
        return None if raw is None else json.loads(raw.decode())

    @staticmethod
    def _chunking(table) -> str | None:
        raw = (table.schema.metadata or {}).get(b"llmql.chunking")
        return None if raw is None else raw.decode()

    def _count(self, table) -> int:
        """Documents (a chunked table counts passage 0 of each)."""
        return table.count_rows("passage = 0") if self._chunking(table) else table.count_rows()

    def _where(self, table, index: str, filter: Filter | None) -> str | None:
        clauses = parse_filter(filter)
        if not clauses:
            return None
        declared = self._declared_fields(table)
        check_fields(clauses, None if declared is None else set(declared), f"{self.location} index {index!r}")
        if declared is None and any(c.bounds for c in clauses):
            raise ValueError(
                f"{self.location} index {index!r} was synced before range filters; sync it again with --recreate"
            )
        columns = field_columns(declared or [])
        check_range_kinds(clauses, self._range_kinds(table, clauses, columns), f"{self.location} index {index!r}")
        return sql_filter(clauses, columns)

    @staticmethod
    def _range_kinds(table, clauses: list, columns: dict[str, tuple[str, str]]) -> Kinds:
        """The kinds of value each ranged field holds: whether any row has its number or its string column set
        (a one-row read each, which stops at the first match)."""
        kinds: Kinds = {}
        for field in {c.field for c in clauses if c.bounds}:
            for kind, column in zip(("number", "string"), columns[field], strict=True):
                if table.search().where(f"{column} IS NOT NULL").select(["id"]).limit(1).to_list():
                    kinds.setdefault(field, set()).add(kind)
        return kinds

    # -- protocol -------------------------------------------------------------------------------------------
    def index_info(self, index: str) -> IndexInfo:
        _check_name(index)
        table = self._table(index)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        return IndexInfo(
            self._resolve(index),
            int(meta.get("llmql.dim", -1)),
            meta.get("llmql.model", ""),
            self._count(table),
            meta.get("llmql.chunking"),
            None if (declared := self._declared_fields(table)) is None else tuple(declared),
        )

    def open_index(
        self,
        index: str,
        dim: int,
        model: str,
        create: bool = True,
        fields: tuple[str, ...] = (),
        chunking: str | None = None,
    ) -> IndexInfo:
        _check_name(index)
        if self.resolve(index) is not None:
            return check_reopened(self.location, self.index_info(index), dim, model, chunking)
        if not create:
            raise unknown_index(self.location, index, [*self._tables(), *self._aliases()])
        self.db.create_table(index, schema=table_schema(dim, model, fields, chunking))
        return IndexInfo(index, dim, model, 0, chunking)

    def upsert(self, index: str, records: Sequence[Record], fresh: bool = False) -> WriteResult:
        if not records:
            return WriteResult()
        table = self._table(index)
        declared = self._declared_fields(table)
        extra = {k for r in records for k in r.fields} - set(declared or ())
        if declared is not None and extra:
            raise ValueError(
                f"{self.location} index {index!r} was created for metadata fields {declared}, not {sorted(extra)}; "
                "sync with --recreate and every --field"
            )
        chunked = self._chunking(table) is not None
        rows = [row for r in records for row in rows_of(r, declared or [], chunked)]
        try:  # one transaction: the whole batch lands or none of it
            if fresh:  # a merge joins against every stored id: at a million documents, most of a sync's time
                table.add(rows)
            elif chunked:  # the documents' passages that are not written again go in the same transaction
                merge = table.merge_insert(["id", "passage"]).when_matched_update_all().when_not_matched_insert_all()
                merge.when_not_matched_by_source_delete(ids_in([r.id for r in records])).execute(rows)
            else:
                table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
        except (OSError, ValueError, RuntimeError) as err:
            raise BackendError(f"{self.location} index {index!r}: write failed ({err})") from None
        return WriteResult(written=[r.id for r in records])

    def delete(self, index: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        table = self._table(index)
        before = self._count(table)
        for start in range(0, len(ids), 1000):
            table.delete(ids_in(ids[start : start + 1000]))
        return before - self._count(table)

    def fetch(
        self, index: str, ids: Sequence[str], with_state: bool = False, with_vector: bool = False
    ) -> dict[str, Record]:
        if not ids:
            return {}
        table = self._table(index)
        columns = ["id", "title", "text", "content_hash", "fields"]
        columns += (["ql_state"] if with_state else []) + (["vector"] if with_vector else [])
        if self._chunking(table):
            return self._fetch_passages(table, ids, columns, with_vector)
        rows = table.search().where(ids_in(ids)).select(columns).limit(len(ids)).to_list()
        return {
            r["id"]: Record(
                r["id"],
                r["title"],
                r["text"],
                vector=np.asarray(r["vector"], dtype=np.float32) if with_vector else None,
                content_hash=r["content_hash"],
                end_states=r.get("ql_state"),
                fields=json.loads(r["fields"] or "{}"),
            )
            for r in rows
        }

    def _fetch_passages(self, table, ids: Sequence[str], columns: list[str], with_vector: bool) -> dict[str, Record]:
        """Chunked: each document from its passage-0 row, with every passage (span, states, vector) in order."""
        query = table.search().where(ids_in(ids)).select([*columns, "passage", "start", "end"]).limit(None)
        return records_of_passage_rows(query.to_list(), with_vector)

    def count(self, index: str) -> int:
        return self._count(self._table(index))

    def bm25(self, index: str, query: str, k: int, filter: Filter | None = None) -> list[Hit]:
        table = self._table(index)
        self._ensure_fts(table)
        search = table.search(query, query_type="fts", fts_columns="search_text")
        where = self._where(table, index, filter)
        if where:
            search = search.where(where, prefilter=True)
        rows = search.select(["id", "title", "text", "fields", "_score"]).limit(k).to_list()
        return [Hit(r["id"], float(r["_score"]), r["title"], r["text"], json.loads(r["fields"] or "{}")) for r in rows]

    def knn(self, index: str, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[Hit]:
        table = self._table(index)
        where = self._where(table, index, filter)

        def nearest(columns: list[str], limit: int) -> list[dict]:
            search = table.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector").metric("dot")
            if where:
                search = search.where(where, prefilter=True)
            return search.select([*columns, "_distance"]).limit(limit).to_list()

        if self._chunking(table):
            return self._knn_passages(table, nearest, k)
        rows = nearest(["id", "title", "text", "fields"], k)
        # LanceDB's "dot" distance is 1 - inner product; vectors are unit-length, so 1 - distance = cosine.
        return [
            Hit(r["id"], 1.0 - float(r["_distance"]), r["title"], r["text"], json.loads(r["fields"] or "{}"))
            for r in rows
        ]

    def _knn_passages(self, table, nearest, k: int) -> list[Hit]:
        """MaxP: the nearest passages, read further until they name k documents (or the index ends); each
        document scores as its first, best, passage. Exact under a flat scan."""
        limit = 4 * k
        while True:
            rows = nearest(["id", "passage", "start", "end"], limit)
            best = max_per_key((r["id"], 1.0 - float(r["_distance"]), r["passage"]) for r in rows)
            if len(best) >= k or len(rows) < limit:
                break
            limit *= 4
        spans = {(r["id"], r["passage"]): (r["start"], r["end"]) for r in rows}
        top = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:k]
        docs = self._first_rows(table, [doc_id for doc_id, _ in top])
        return [
            Hit(i, score, docs[i]["title"], docs[i]["text"], json.loads(docs[i]["fields"] or "{}"), spans[(i, p)])
            for i, (score, p) in top
            if i in docs
        ]

    @staticmethod
    def _first_rows(table, ids: list[str]) -> dict[str, dict]:
        """Passage-0 rows (title, text, fields) of chunked documents."""
        if not ids:
            return {}
        where = f"passage = 0 AND {ids_in(ids)}"
        rows = table.search().where(where).select(["id", "title", "text", "fields"]).limit(len(ids)).to_list()
        return {r["id"]: r for r in rows}

    def content_hashes(self, index: str) -> Iterator[tuple[str, str]]:
        table = self._table(index)
        query = table.search().where("passage = 0") if self._chunking(table) else table.search()
        data = query.select(["id", "content_hash"]).limit(None).to_arrow()  # a chunked document once
        yield from zip(data.column("id").to_pylist(), data.column("content_hash").to_pylist(), strict=True)

    def swap_alias(self, alias: str, index: str) -> list[str]:
        if index not in self._tables():
            raise BackendError(f"{self.location}: cannot point alias {alias!r} at missing index {index!r}")
        if alias in self._tables():
            raise BackendError(f"{self.location}: {alias!r} is an index, not an alias")
        return point_alias(self.root, alias, index)

    def drop_index(self, index: str) -> None:
        if index in self._tables():
            self.db.drop_table(index)

    def refresh(self, index: str) -> None:
        table = self._table(index)
        self._ensure_fts(table, force=True)
        if table.count_rows() >= self.ann_min_rows:
            partitions = max(1, int(table.count_rows() ** 0.5 // 8))
            table.create_index(
                metric="dot",
                vector_column_name="vector",
                index_type="IVF_HNSW_SQ",
                num_partitions=partitions,
                replace=True,
            )

    def _ensure_fts(self, table, force: bool = False) -> None:
        indices = {i.columns[0]: i for i in table.list_indices() if i.index_type == "FTS"}
        current = indices.get("search_text")
        if current is None or (force and getattr(current, "num_unindexed_rows", 0)):
            from lancedb.index import FTS

            table.create_index("search_text", config=FTS(with_position=False), replace=True)

    def close(self) -> None:
        pass
