"""How the `memory` backend keeps an index on disk: an append-only log of write segments, one file a write.

Each upsert or delete becomes one `.npz` file (numpy arrays only, never a pickle), written to a temporary name
and renamed, so a segment is there whole or not at all: a sync killed mid-way resumes from the writes it had
confirmed, and another process opening the directory sees exactly those. Names sort in write order (the time,
then the process); each reader keeps the set of segments it applied. `compact` rewrites everything on disk as a
snapshot segment (naming what it replaces) and removes those segments.

One writer at a time: appends and compaction hold an OS lock on the index directory (`writer_lock`), and a
compaction first reads every segment another process landed, so its snapshot holds them (two compactions that
overlapped each kept only their own process's writes, and a reader took the newer). Readers take no lock: a
segment appears by one rename. Strings travel as one UTF-8 buffer with offsets, so any text survives, NUL
included (fixed-width numpy strings pad every text to the longest and drop trailing NULs).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from llmql.connectors.base import BackendError, Passage, Record
from llmql.connectors.file_lock import exclusive

log = logging.getLogger(__name__)
META = "meta.json"
LOCK = ".writer.lock"
_COUNTER = itertools.count()
REMEDY = {
    "upsert": "remove it and sync again with --incremental: the documents it held are written again",
    "delete": "remove it and sync again with --delete-missing: the deletions it held are made again",
    "snapshot": "remove the index folder and sync again (its other segments depend on this one)",
}


@contextlib.contextmanager
def writer_lock(directory: Path):
    """The index's one writer: an exclusive OS lock on a file in its directory. A second writer waits, saying so."""
    if not directory.is_dir():  # never created here: a dropped index stays dropped
        raise BackendError(f"{directory}: the index was dropped (by another process?) while this one wrote it")
    with exclusive(directory / LOCK, f"{directory}: another process is writing this index; waiting for it"):
        yield


class CorruptSegment(BackendError):
    """A segment file that cannot be read as one: named, with what it held and what to do."""


def corrupt(path: Path, err: BaseException) -> CorruptSegment:
    kind = path.name.rsplit("-", 1)[-1].removesuffix(".npz")
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        reason = "an empty file"
    elif "pickled" in str(err):  # numpy's own message invites an unsafe load; nothing here is ever unpickled
        reason = "not an archive of numpy arrays"
    else:
        reason = f"{type(err).__name__}: {err}"
    return CorruptSegment(
        f"{path}: this {kind} segment of the memory index is corrupt ({size} bytes; {reason}); "
        f"{REMEDY.get(kind, REMEDY['snapshot'])}"
    )


def _strings(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unstrings(buffer: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = buffer.tobytes()
    return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())]


def encode_ids(ids: Sequence[str]) -> dict[str, np.ndarray]:
    """A delete segment's ids, losslessly."""
    data, offsets = _strings(ids)
    return {"ids.data": data, "ids.offsets": offsets}


def decode_ids(arrays) -> list[str]:
    """A delete segment's ids (segments written before ids were stored losslessly hold a numpy str array)."""
    if "ids.data" in arrays:
        return _unstrings(arrays["ids.data"], arrays["ids.offsets"])
    return arrays["ids"].tolist()


def _blobs(values: Sequence[bytes | None]) -> dict[str, np.ndarray]:
    present = np.array([v is not None for v in values], dtype=bool)
    joined = [v or b"" for v in values]
    offsets = np.zeros(len(joined) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(v) for v in joined])
    data = np.frombuffer(b"".join(joined), dtype=np.uint8)
    return {"data": data, "offsets": offsets, "present": present}


def _unblobs(data: np.ndarray, offsets: np.ndarray, present: np.ndarray) -> list[bytes | None]:
    raw = data.tobytes()
    return [raw[a:b] if p else None for (a, b), p in zip(itertools.pairwise(offsets.tolist()), present, strict=True)]


def _vectors(values: Sequence[np.ndarray | None], dim: int) -> np.ndarray:
    out = np.zeros((len(values), dim), dtype=np.float32)
    for i, v in enumerate(values):
        out[i] = v
    return out


def encode_records(records: Sequence[Record], dim: int) -> dict[str, np.ndarray]:
    """Records -> the arrays of one segment."""
    arrays: dict[str, np.ndarray] = {}
    for name, values in (
        ("ids", [r.id for r in records]),
        ("titles", [r.title for r in records]),
        ("texts", [r.text for r in records]),
        ("hashes", [r.content_hash for r in records]),
        ("fields", [json.dumps(r.fields, sort_keys=True) for r in records]),
    ):
        arrays[f"{name}.data"], arrays[f"{name}.offsets"] = _strings(values)
    passages = [(i, p) for i, r in enumerate(records) for p in r.passages]
    arrays["chunked"] = np.array(bool(passages))
    if passages:
        arrays["p.doc"] = np.array([i for i, _ in passages], dtype=np.int64)
        arrays["p.span"] = np.array([(p.start, p.end) for _, p in passages], dtype=np.int64).reshape(-1, 2)
        arrays["p.vectors"] = _vectors([p.vector for _, p in passages], dim)
        arrays |= {f"p.state.{k}": v for k, v in _blobs([p.end_states for _, p in passages]).items()}
    else:
        arrays["vectors"] = _vectors([r.vector for r in records], dim)
        arrays |= {f"state.{k}": v for k, v in _blobs([r.end_states for r in records]).items()}
    return arrays


def decode_records(arrays) -> list[Record]:
    """The arrays of one segment -> its records, in the order written."""
    text = {
        name: _unstrings(arrays[f"{name}.data"], arrays[f"{name}.offsets"])
        for name in ("ids", "titles", "texts", "hashes", "fields")
    }
    n = len(text["ids"])
    passages: list[list[Passage]] = [[] for _ in range(n)]
    vectors, states = [None] * n, [None] * n
    if bool(arrays["chunked"]):
        blobs = _unblobs(arrays["p.state.data"], arrays["p.state.offsets"], arrays["p.state.present"])
        for doc, (start, end), vector, blob in zip(
            arrays["p.doc"].tolist(), arrays["p.span"].tolist(), arrays["p.vectors"], blobs, strict=True
        ):
            passages[doc].append(Passage(start, end, vector, blob))
    else:
        vectors = list(arrays["vectors"])
        states = _unblobs(arrays["state.data"], arrays["state.offsets"], arrays["state.present"])
    return [
        Record(
            text["ids"][i],
            text["titles"][i],
            text["texts"][i],
            vectors[i],
            text["hashes"][i],
            states[i],
            json.loads(text["fields"][i]),
            tuple(passages[i]),
        )
        for i in range(n)
    ]


class SegmentLog:
    """The segment files of one index directory."""

    def __init__(self, directory: Path):
        self.directory = directory

    def write(self, kind: str, arrays: dict[str, np.ndarray]) -> str:
        """One segment, atomically; returns its name."""
        name = f"{time.time_ns():020d}-{os.getpid():08d}-{next(_COUNTER):08d}-{kind}.npz"
        tmp = self.directory / f".{name}.tmp"
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.directory / name)
        return name

    def names(self) -> list[str]:
        """Every segment here, in write order."""
        return sorted(p.name for p in self.directory.glob("*.npz"))

    def unread(self, applied: set[str]) -> tuple[str | None, list[str]]:
        """What a reader that has applied `applied` must read: the newest snapshot when it has not read it (then
        everything again from there), and the writes it has not seen. Writes are tracked by name, not by a
        high-water mark: another process's write may land after a later-named one was read."""
        names = self.names()
        snapshots = [n for n in names if n.endswith("-snapshot.npz")]
        newest = snapshots[-1] if snapshots and snapshots[-1] not in applied else None
        return newest, [n for n in names if not n.endswith("-snapshot.npz") and n not in applied]

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, str, dict]]:
        """(name, kind, arrays) of each segment; a file that is not a whole segment is a `CorruptSegment`."""
        for name in names:
            path = self.directory / name
            try:
                with np.load(path, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
            except FileNotFoundError:
                raise
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                raise corrupt(path, err) from None
            yield name, name.rsplit("-", 1)[1].removesuffix(".npz"), arrays

    def compact(self, records: Sequence[Record], dim: int, applied: set[str]) -> str:
        """Write every record as one snapshot segment naming the segments it replaces, then remove those and the
        temporary files writers killed mid-write left. Called under `writer_lock`, by a reader that has applied
        every segment on disk, so nothing it removes is lost."""
        arrays = encode_records(records, dim)
        arrays["replaces"] = np.array(sorted(applied), dtype=str)
        name = self.write("snapshot", arrays)
        for old in applied:
            if old != name:
                (self.directory / old).unlink(missing_ok=True)
        for orphan in self.directory.glob(".*.npz.tmp"):
            orphan.unlink(missing_ok=True)
        return name
