"""The `memory` backend: an exact index in this process, for evaluation, notebooks and benchmarks.

Documents, vectors, [E] states and fields are held in process memory; kNN is exact, one matrix product on the
device (`device`: a GPU when there is one), a chunked document scoring as its best passage (MaxP); BM25 is
bm25s with the analysis of the project's BM25 baseline (English stemming and stop words); filters are the
shared filter language, decided as the embedded engine decides them. Nothing beyond numpy, torch and bm25s is
needed, so every figure can be taken on a host that has only those.

A directory as `location` keeps each index there as a log of write segments (`memory_log`): a killed sync
resumes from what it had confirmed, a later process (`llmql-search`, `llmql-eval`) opens the same index, and
`refresh` compacts the log. `location=":memory:"` keeps nothing on disk. Handles opened on one location in one
process share its indexes; each call first reads the segments other processes have written since.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
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
from llmql.connectors.filters import check_fields, check_range_kinds, field_kinds, matches, parse_filter
from llmql.connectors.memory_log import (
    META,
    SegmentLog,
    corrupt,
    decode_ids,
    decode_records,
    encode_ids,
    encode_records,
    writer_lock,
)
from llmql.train.core.bm25 import BM25
from llmql.train.core.config import write_json_atomic
from llmql.train.core.device import resolve_device

IN_MEMORY = ":memory:"
_LOCK = threading.RLock()
_STORES: dict[str, dict[str, _Index]] = {}  # location -> index name -> index, shared by the handles


@dataclass
class _Index:
    name: str
    dim: int
    model: str
    fields: tuple[str, ...]
    chunking: str | None
    docs: dict[str, Record] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)  # the segments read (or written) by this process
    uid: str = ""  # this generation of the index (a dropped and re-created one is another)
    search: dict[str, _Search] = field(default_factory=dict)  # by device, built on first search after a write

    def info(self) -> IndexInfo:
        return IndexInfo(self.name, self.dim, self.model, len(self.docs), self.chunking, self.fields)

    def apply(self, kind: str, arrays: dict) -> None:
        if kind == "snapshot":
            self.docs = {}
        if kind == "delete":
            for doc_id in decode_ids(arrays):
                self.docs.pop(doc_id, None)
        else:
            self.docs.update((r.id, r) for r in decode_records(arrays))
        self.search = {}


class MemoryBackend:
    name = "memory"

    def __init__(self, location: str | Path = IN_MEMORY, device: str = "auto"):

        self.location = str(location)
        self.root = None if self.location == IN_MEMORY else Path(location)
        self.device = resolve_device(device)
        key = self.location if self.root is None else os.path.realpath(self.root)
        with _LOCK:
            self._indexes = _STORES.setdefault(key, {})

    # -- the store ----------------------------------------------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        return getattr(self, "_memory_aliases", {}) if self.root is None else read_aliases(self.root)

    def _names(self) -> set[str]:
        """Every index here: in memory, or (a directory) on disk, where other processes may add and drop them."""
        if self.root is None:
            return set(self._indexes)
        return {p.parent.name for p in self.root.glob(f"*/{META}")} if self.root.is_dir() else set()

    def _index(self, index: str) -> _Index:
        """The index (or the index an alias points to), brought up to date with its segments on disk (read anew
        when another process dropped and re-created it)."""
        check_directory_name(index)
        name = self._aliases().get(index, index)
        with _LOCK:
            if name not in self._names():
                self._indexes.pop(name, None)
                raise unknown_index(self.location, index, self._names() | set(self._aliases()))
            current = self._indexes.get(name)
            if self.root is not None:
                meta = json.loads((self.root / name / META).read_text())
                if current is None or current.uid != meta["uid"]:
                    current = _Index(name, meta["dim"], meta["model"], tuple(meta["fields"]), meta["chunking"])
                    current.uid = meta["uid"]
                    self._indexes[name] = current
                self._catch_up(current)
            return current

    def _catch_up(self, index: _Index) -> None:
        log = SegmentLog(self.root / index.name)
        try:
            snapshot, writes = log.unread(index.applied)
            if snapshot is not None:  # compacted since we read it: start again from the snapshot
                index.docs, index.applied = {}, set()
                for name, kind, arrays in log.read([snapshot]):
                    _apply(index, log.directory / name, kind, arrays)
                    index.applied |= {name, *arrays["replaces"].tolist()}
                writes = [w for w in writes if w not in index.applied]
            for name, kind, arrays in log.read(writes):
                _apply(index, log.directory / name, kind, arrays)
                index.applied.add(name)
        except FileNotFoundError:  # compacted while we read: read it again from its snapshot
            index.docs, index.applied = {}, set()
            self._catch_up(index)

    def _log(self, index: _Index, kind: str, arrays: dict) -> None:
        """Append one segment under the writer lock, after reading what other writers landed first: their
        segments are older than ours, so they must be applied before ours here too (applied after it, an older
        write of the same id would win in this process and in the snapshot its compaction writes)."""
        if self.root is not None:
            with writer_lock(self.root / index.name):
                self._catch_up(index)
                index.applied.add(SegmentLog(self.root / index.name).write(kind, arrays))

    # -- protocol -----------------------------------------------------------------------------------------------
    def open_index(
        self,
        index: str,
        dim: int,
        model: str,
        create: bool = True,
        fields: tuple[str, ...] = (),
        chunking: str | None = None,
    ) -> IndexInfo:
        check_directory_name(index)
        if self.resolve(index) is not None:
            return check_reopened(self.location, self.index_info(index), dim, model, chunking)
        if not create:
            raise unknown_index(self.location, index, self._names() | set(self._aliases()))
        with _LOCK:
            created = _Index(index, dim, model, tuple(fields), chunking, uid=uuid.uuid4().hex)
            if self.root is not None:
                directory = self.root / index
                directory.mkdir(parents=True, exist_ok=True)
                meta = {"dim": dim, "model": model, "fields": list(fields), "chunking": chunking, "uid": created.uid}
                write_json_atomic(directory / META, meta)
            self._indexes[index] = created
        return IndexInfo(index, dim, model, 0, chunking)

    def index_info(self, index: str) -> IndexInfo:
        return self._index(index).info()

    def resolve(self, index: str) -> str | None:
        name = self._aliases().get(index, index)
        return name if name in self._names() else None

    def upsert(self, index: str, records: Sequence[Record], fresh: bool = False) -> WriteResult:
        if not records:
            return WriteResult()
        target = self._index(index)
        _check_records(self.location, target, records)
        with _LOCK:
            self._log(target, "upsert", encode_records(records, target.dim))
            target.docs.update((r.id, r) for r in records)
            target.search = {}
        return WriteResult(written=[r.id for r in records])

    def delete(self, index: str, ids: Sequence[str]) -> int:
        target = self._index(index)
        gone = [i for i in dict.fromkeys(ids) if i in target.docs]
        if gone:
            with _LOCK:
                self._log(target, "delete", encode_ids(gone))
                for doc_id in gone:
                    del target.docs[doc_id]
                target.search = {}
        return len(gone)

    def fetch(
        self, index: str, ids: Sequence[str], with_state: bool = False, with_vector: bool = False
    ) -> dict[str, Record]:
        docs = self._index(index).docs
        return {i: _view(docs[i], with_state, with_vector) for i in ids if i in docs}

    def count(self, index: str) -> int:
        return len(self._index(index).docs)

    def bm25(self, index: str, query: str, k: int, filter: Filter | None = None) -> list[Hit]:
        target = self._index(index)
        return self._searcher(target).bm25(query, k, self._allowed(target, filter))

    def knn(self, index: str, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[Hit]:
        target = self._index(index)
        return self._searcher(target).knn(vector, k, self._allowed(target, filter))

    def content_hashes(self, index: str) -> Iterator[tuple[str, str]]:
        yield from [(r.id, r.content_hash) for r in self._index(index).docs.values()]

    def swap_alias(self, alias: str, index: str) -> list[str]:
        check_directory_name(alias)
        if index not in self._names():
            raise BackendError(f"{self.location}: cannot point alias {alias!r} at missing index {index!r}")
        if alias in self._names():
            raise BackendError(f"{self.location}: {alias!r} is an index, not an alias")
        with _LOCK:
            if self.root is not None:
                return point_alias(self.root, alias, index)
            previous = [self._aliases()[alias]] if alias in self._aliases() else []
            self._memory_aliases = {**self._aliases(), alias: index}
        return previous

    def drop_index(self, index: str) -> None:
        with _LOCK:
            self._indexes.pop(index, None)
            if self.root is not None and (self.root / index).is_dir():
                with writer_lock(self.root / index):  # never under a writer's append or compaction
                    shutil.rmtree(self.root / index, ignore_errors=True)

    def refresh(self, index: str) -> None:
        """Compact the index's log into one snapshot. The search structures (the vector matrix, BM25) are built by
        the first search after a write, not here: a sync does not pay for them (on an H200 building BM25 over
        20,732 documents was about a third of a sync's time), nor a process that only writes."""
        target = self._index(index)
        if self.root is None:
            return
        directory = self.root / target.name
        with _LOCK, writer_lock(directory):
            self._catch_up(target)  # what other writers landed goes into the snapshot, or its removal loses it
            log = SegmentLog(directory)
            if len(log.names()) > 1 or any(directory.glob(".*.npz.tmp")):
                target.applied.add(log.compact(list(target.docs.values()), target.dim, target.applied))

    def close(self) -> None:
        pass

    # -- search -------------------------------------------------------------------------------------------------
    def _searcher(self, target: _Index) -> _Search:
        with _LOCK:
            if self.device not in target.search:
                target.search[self.device] = _Search(target, self.device)
            return target.search[self.device]

    def _allowed(self, target: _Index, filter: Filter | None) -> np.ndarray | None:
        """Which documents (in the searcher's order) pass the filter; None: no filter."""
        clauses = parse_filter(filter)
        if not clauses:
            return None
        check_fields(clauses, set(target.fields), f"{self.location} index {target.name!r}")
        searcher = self._searcher(target)
        check_range_kinds(clauses, searcher.kinds, f"{self.location} index {target.name!r}")
        docs = searcher.docs
        return np.fromiter((matches(clauses, r.fields) for r in docs), dtype=bool, count=len(docs))


def _apply(index: _Index, path: Path, kind: str, arrays: dict) -> None:
    """One segment applied; one whose arrays do not decode is a `CorruptSegment` naming its file."""
    try:
        index.apply(kind, arrays)
    except (KeyError, ValueError, UnicodeDecodeError, IndexError) as err:
        raise corrupt(path, err) from None


def _check_records(location: str, target: _Index, records: Sequence[Record]) -> None:
    """What the embedded engine refuses, refused the same way before anything is written."""
    extra = {k for r in records for k in r.fields} - set(target.fields)
    if extra:
        raise ValueError(
            f"{location} index {target.name!r} was created for metadata fields {list(target.fields)}, not "
            f"{sorted(extra)}; sync with --recreate and every --field"
        )
    chunked = target.chunking is not None
    for r in records:
        if chunked != bool(r.passages):
            raise ValueError(
                f"document {r.id!r}: a {'chunked' if chunked else 'whole-document'} index needs "
                f"{'passages' if chunked else 'one vector'}"
            )
        vectors = [p.vector for p in r.passages] if chunked else [r.vector]
        if any(v is None or np.asarray(v).shape != (target.dim,) for v in vectors):
            raise ValueError(f"document {r.id!r}: the index holds {target.dim}-d vectors")


def _view(record: Record, with_state: bool, with_vector: bool) -> Record:
    """A stored record as `fetch` returns it: states and vectors only when asked for."""
    passages = tuple(
        replace(p, vector=p.vector if with_vector else None, end_states=p.end_states if with_state else None)
        for p in record.passages
    )
    return replace(
        record,
        vector=record.vector if with_vector else None,
        end_states=record.end_states if with_state else None,
        passages=passages,
    )


class _Search:
    """An index's documents in a fixed order, their vectors (one row per passage) on the device, and BM25."""

    def __init__(self, target: _Index, device: str):
        import torch

        self.docs = list(target.docs.values())
        self.kinds = field_kinds(r.fields for r in self.docs)
        rows = [(d, p) for d, r in enumerate(self.docs) for p in (r.passages or (None,))]
        self.row_doc = torch.tensor([d for d, _ in rows], dtype=torch.long, device=device)
        self.spans = [None if p is None else (p.start, p.end) for _, p in rows]
        vectors = [self.docs[d].vector if p is None else p.vector for d, p in rows]
        matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, target.dim), np.float32)
        self.matrix = torch.from_numpy(matrix).to(device)
        self.device = device
        self.bm25_index = BM25([f"{r.title} {r.text}" for r in self.docs]) if self.docs else None

    def _hit(self, d: int, score: float, span: tuple[int, int] | None = None) -> Hit:
        r = self.docs[d]
        return Hit(r.id, float(score), r.title, r.text, r.fields, span)

    def bm25(self, query: str, k: int, allowed: np.ndarray | None) -> list[Hit]:
        if self.bm25_index is None:
            return []
        scores = self.bm25_index.scores(query)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        found = np.flatnonzero(scores > 0)
        top = found[np.lexsort((found, -scores[found]))][:k]
        return [self._hit(int(d), scores[d]) for d in top]

    def knn(self, vector: np.ndarray, k: int, allowed: np.ndarray | None) -> list[Hit]:
        """Exact: every row's cosine (vectors are unit length), each document's best row, the top k."""
        import torch

        if not self.docs:
            return []
        query = torch.as_tensor(np.asarray(vector, dtype=np.float32), device=self.device)
        rows = self.matrix @ query  # [R]
        best = torch.full((len(self.docs),), -torch.inf, device=self.device)
        best = best.scatter_reduce(0, self.row_doc, rows, reduce="amax")
        if allowed is not None:
            best = torch.where(torch.as_tensor(allowed, device=self.device), best, -torch.inf)
        n = int(min(k, len(self.docs) if allowed is None else int(allowed.sum())))
        if n == 0:
            return []
        scores, docs = torch.topk(best, n)
        scores, docs = scores.cpu().numpy(), docs.cpu().numpy()
        spans = self._best_spans(rows, docs, scores) if any(s is not None for s in self.spans) else {}
        return [self._hit(int(d), s, spans.get(int(d))) for d, s in zip(docs, scores, strict=True)]

    def _best_spans(self, rows, docs: np.ndarray, scores: np.ndarray) -> dict[int, tuple[int, int]]:
        """Each found document's first passage reaching its best score."""
        row_doc = self.row_doc.cpu().numpy()
        values = rows.cpu().numpy()
        out: dict[int, tuple[int, int]] = {}
        wanted = dict(zip(docs.tolist(), scores.tolist(), strict=True))
        for row, d in enumerate(row_doc.tolist()):
            if d in wanted and d not in out and values[row] >= wanted[d]:
                out[d] = self.spans[row]
        return out
