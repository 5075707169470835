"""The one small interface every search engine implements, and the records that cross it.

A backend stores, per document: id, title, text, the dense vector, a content hash (for incremental sync),
optionally the document's cached [E] states for fast QL re-ranking, and flat metadata fields for filters. A
chunked index (`llmql-sync --chunk-tokens`) stores a document's passages instead of one vector: each its span of
the text, vector and [E] states; the document is still the unit that is written, replaced, deleted and found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# the filter language lives in llmql.connectors.filters; re-exported for the backends' signatures
from llmql.connectors.filters import FieldValue as FieldValue
from llmql.connectors.filters import Filter as Filter
from llmql.connectors.filters import parse_filter
from llmql.train.core.errors import LLMQLError


def check_filter(value: object) -> Filter:
    """A filter as a user wrote it (parsed JSON) -> the filter, or ValueError saying what is wrong with it."""
    parse_filter(value)
    return value  # type: ignore[return-value]


class BackendError(LLMQLError):
    """A search engine refused or could not be reached; the message names the URL and index."""


class BackendUnavailable(BackendError):
    """The engine could not be reached or answered that it cannot serve now (connection refused, 502-504)."""


class UnknownIndex(BackendError):
    """No index or alias of that name."""


def unknown_index(location: str, index: str, existing: Iterable[str]) -> UnknownIndex:
    """The error for a missing index, naming the indexes and aliases that do exist (the first 20)."""
    names = sorted(n for n in existing if not n.startswith("."))
    held = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "") if names else "none"
    return UnknownIndex(f"{location}: no index or alias named {index!r} (indexes and aliases here: {held})")


class IndexMismatch(BackendError):
    """The index exists but was built for another embedding dimension or model."""


_DIRECTORY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_directory_name(index: str) -> None:
    """Index names of the engines that keep an index as a directory: no '.', '..', leading dot or dash."""
    if len(index) > 200:
        raise BackendError(f"an index name has at most 200 characters, not {len(index)}")
    if not _DIRECTORY_NAME.match(index):
        raise BackendError(
            f"{index!r}: index names start with a letter, digit or '_' and use letters, digits, '_', '.', '-' only"
        )


def check_index_model(location: str, info: IndexInfo, dim: int, model: str, remedy: str) -> None:
    """Raise IndexMismatch naming both models when `info` was built by another model or dimension."""
    if info.dim != dim or info.model != model:
        raise IndexMismatch(
            f"{location} index {info.name!r} holds {info.dim}-d vectors of model {info.model!r}, not {dim}-d of "
            f"{model!r}; {remedy}"
        )


@dataclass(frozen=True)
class Passage:
    """One passage of a chunked document: its [start, end) character span of the text, vector and [E] states."""

    start: int
    end: int
    vector: np.ndarray | None = None
    end_states: bytes | None = None  # packed [E] states (llmql.connectors.state_blobs)


@dataclass(frozen=True)
class Record:
    id: str
    title: str
    text: str
    vector: np.ndarray | None = None  # float32 [dim], L2-normalised; None in a chunked index
    content_hash: str = ""
    end_states: bytes | None = None  # packed [E] states (llmql.connectors.state_blobs)
    fields: dict[str, FieldValue] = field(default_factory=dict)
    passages: tuple[Passage, ...] = ()  # a chunked index's passages, in text order


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # BM25 score, or cosine similarity for kNN (a chunked document's: its best passage's)
    title: str = ""
    text: str = ""
    fields: dict[str, FieldValue] = field(default_factory=dict)
    passage: tuple[int, int] | None = None  # kNN in a chunked index: the best passage's span of the text


@dataclass(frozen=True)
class IndexInfo:
    name: str
    dim: int
    model: str
    count: int
    chunking: str | None = None  # "tokens/overlap" for a chunked index (llmql.train.core.chunking.Chunking)
    fields: tuple[str, ...] | None = None  # the metadata fields it holds (None: the engine cannot say)


def check_reopened(location: str, info: IndexInfo, dim: int, model: str, chunking: str | None) -> IndexInfo:
    """An existing index opened for writing must hold what the sync writes: the same model and dimension, and
    the same chunking (the layouts differ, and a document must not be half in one and half in the other).
    Raises IndexMismatch before anything is written; returns `info`."""
    check_index_model(location, info, dim, model, "use --recreate or another --index")
    if info.chunking != chunking:

        def say(c: str | None) -> str:
            return f"chunks of {c} tokens/overlap" if c else "whole documents"

        raise IndexMismatch(
            f"{location} index {info.name!r} holds {say(info.chunking)}, not {say(chunking)}; use --recreate or "
            "another --index"
        )
    return info


@dataclass
class WriteResult:
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)


@runtime_checkable
class SearchBackend(Protocol):
    """What searching an index needs of an engine (search, re-ranking, evaluation, the service)."""

    name: str
    location: str  # URL or directory, for messages

    def index_info(self, index: str) -> IndexInfo:
        """What `index` (or the index an alias points to) holds: dimension, model identity, document count,
        chunking, metadata fields. Raises UnknownIndex (naming the indexes there) if there is no such index."""

    def fetch(
        self, index: str, ids: Sequence[str], with_state: bool = False, with_vector: bool = False
    ) -> dict[str, Record]: ...

    def count(self, index: str) -> int: ...

    def bm25(self, index: str, query: str, k: int, filter: Filter | None = None) -> list[Hit]: ...

    def knn(self, index: str, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[Hit]: ...


@runtime_checkable
class SyncBackend(Protocol):
    """What writing an index needs of an engine (the sync)."""

    name: str
    location: str

    def open_index(
        self,
        index: str,
        dim: int,
        model: str,
        create: bool = True,
        fields: tuple[str, ...] = (),
        chunking: str | None = None,
    ) -> IndexInfo:
        """Open `index` (or the index an alias points to), creating it if allowed, ready to filter on the metadata
        `fields`, holding passages when `chunking` is given. Raises IndexMismatch if it exists with another
        dimension, model or chunking, before anything is written."""

    def resolve(self, index: str) -> str | None:
        """The concrete index behind a name (itself, or what an alias points to), or None if there is none."""

    def upsert(self, index: str, records: Sequence[Record], fresh: bool = False) -> WriteResult:
        """Write records by id (a second write replaces, passages included: none of the old ones is left).
        `fresh`: the caller guarantees none of these ids is in the index yet, so an engine may append without
        looking them up."""

    def delete(self, index: str, ids: Sequence[str]) -> int:
        """Remove documents (with all their passages); returns how many documents were removed."""

    def content_hashes(self, index: str) -> Iterator[tuple[str, str]]:
        """(id, content hash) of every stored document, for incremental sync."""

    def swap_alias(self, alias: str, index: str) -> list[str]:
        """Point `alias` at `index` atomically; return the indexes it pointed to before."""

    def drop_index(self, index: str) -> None: ...

    def refresh(self, index: str) -> None:
        """Make written documents searchable (and build indexes that are built in bulk)."""


@runtime_checkable
class Backend(SearchBackend, SyncBackend, Protocol):
    """An engine: both halves. Implementations: embedded (LanceDB), memory, opensearch, elasticsearch."""
