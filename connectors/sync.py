"""`sync`: corpus -> embeddings -> a search index, idempotent, resumable and honest about failures.

Documents keep their source ids, so writing twice leaves one copy. Progress is committed batch by batch to a
small state file once the engine has acknowledged the batch, so `resume` restarts after the last confirmed
batch. With `alias`, a new index generation is built and the alias swapped only when it is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from llmql.connectors.base import Record
from llmql.connectors.corpus import (
    BadLine,
    CorpusFormat,
    SourceDoc,
    content_hash,
    corpus_file,
    read_corpus,
    scan_corpus,
)
from llmql.connectors.registry import open_backend
from llmql.train.device import resolve_device
from llmql.train.errors import DataError, LLMQLError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncConfig:
    corpus: str
    model: str  # an llmql-export directory (ONNX) or a model directory (torch)
    backend: str = "embedded"
    url: str = "./llmql-index"  # directory for the embedded backend
    index: str = "llmql"
    alias: str | None = None
    batch_size: int = 64
    recreate: bool = False
    incremental: bool = False
    delete_missing: bool = False
    resume: bool = False
    on_error: Literal["skip", "fail"] = "fail"
    ql_cache: Literal["none", "fp16", "int8"] = "none"
    corpus_format: CorpusFormat = field(default_factory=CorpusFormat)
    failures_file: str | None = None  # default: llmql-sync-failures.jsonl in the working directory
    insecure: bool = False
    runtime: Literal["auto", "onnx", "torch"] = "auto"
    device: str = "auto"  # auto, cpu, cuda, cuda:N (llmql.train.device.resolve_device)
    backend_options: dict = field(default_factory=dict)


@dataclass
class SyncReport:
    index: str
    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    seconds: float = 0.0
    resumed_after_line: int = 0
    failures_file: str | None = None
    alias: str | None = None
    replaced: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


def state_path(cfg: SyncConfig) -> Path:
    """Where progress of this (backend, location, index or alias, corpus) is kept."""
    from llmql.train.model_sources import cache_root

    key = json.dumps([cfg.backend, cfg.url, cfg.alias or cfg.index, str(corpus_file(cfg.corpus).resolve())])
    return cache_root() / "sync" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def sync(cfg: SyncConfig, progress: bool = True) -> SyncReport:
    """Encode and write `cfg.corpus` into the index; see the module docstring for the guarantees."""
    from tqdm.auto import tqdm

    from llmql.export.runtime import load_encoder

    start = time.perf_counter()
    source = corpus_file(cfg.corpus)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: corpus file not found")
    device = resolve_device(cfg.device)  # a GPU that is not here is refused before anything is read
    scan = _validate(source, cfg)  # before anything is written: a bad corpus changes no index
    encoder = load_encoder(cfg.model, runtime=cfg.runtime, device=device)
    writer = _BatchWriter(cfg, encoder, _ql_scorer(cfg, device))
    options = dict(cfg.backend_options)
    if cfg.backend != "embedded" and cfg.insecure:
        options["verify_certs"] = False
    backend = open_backend(cfg.backend, cfg.url, **options)
    progress_file = _Progress(state_path(cfg), cfg, encoder.identity)
    _drop_abandoned(backend, cfg, progress_file.abandoned)
    if cfg.recreate and not progress_file.resumed:
        backend.drop_index(progress_file.target)
    info = backend.open_index(progress_file.target, encoder.dim, encoder.identity, create=True)  # refuses a mismatch
    progress_file.save(info.name)
    report = SyncReport(index=info.name, resumed_after_line=progress_file.committed, alias=cfg.alias)
    existing = dict(backend.content_hashes(info.name)) if (cfg.incremental or cfg.delete_missing) else {}
    seen: set[str] = set()
    failures = FailureLog(Path(progress_file.failures_file), keep=progress_file.resumed)
    bar = tqdm(
        total=scan.lines,
        initial=min(progress_file.committed, scan.lines),
        unit="doc",
        desc=f"sync {info.name}",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for batch in _batches(read_corpus(source, cfg.corpus_format), cfg.batch_size):
            docs = _accept(batch, progress_file.committed, seen, failures)
            writer.write(backend, info.name, docs, existing, report, failures)
            progress_file.commit(info.name, batch[-1].line)
            bar.update(sum(1 for item in batch if item.line > report.resumed_after_line))
    finally:
        bar.close()
    _finish(cfg, backend, info.name, report, sorted(set(existing) - seen) if cfg.delete_missing else [])
    report.failed = failures.close()
    report.failures_file = str(failures.path) if report.failed else None
    progress_file.remove()
    report.seconds = time.perf_counter() - start
    return report


def _validate(source: Path, cfg: SyncConfig):
    """Scan the whole corpus: in `fail` mode its first bad line stops the sync before any write, and an empty
    corpus is refused where it would empty the index (--recreate, --delete-missing)."""
    scan = scan_corpus(source, cfg.corpus_format)
    if scan.bad and cfg.on_error == "fail":
        bad = scan.bad[0]
        more = f"; {len(scan.bad) - 1} more bad line(s)" if len(scan.bad) > 1 else ""
        raise DataError(
            f"{source}:{bad.line}: {bad.reason}{more}; nothing was written (use --on-error skip to skip bad lines)"
        )
    if scan.documents == 0:
        if cfg.recreate or cfg.delete_missing:
            raise DataError(
                f"{source}: no documents; refusing to --recreate or --delete-missing (it would empty the index)"
            )
        log.warning("%s: no documents to sync (%d line(s), none usable)", source, scan.lines)
    return scan


def _drop_abandoned(backend, cfg: SyncConfig, generation: str | None) -> None:
    """An interrupted --alias sync that is started over leaves its half-built generation: drop it, unless the
    alias already serves it (the previous run stopped between the swap and removing its state)."""
    if generation is None or generation in (cfg.index, cfg.alias):
        return
    if cfg.alias and backend.resolve(cfg.alias) == generation:
        return
    log.warning("dropping %s, the half-built generation of the interrupted sync", generation)
    backend.drop_index(generation)


class FailureLog:
    """Failed documents, appended to the failures file as they happen, so an interrupted and resumed sync still
    reports the ones found before the interruption."""

    def __init__(self, path: Path, keep: bool):
        self.path = path
        if not keep:
            path.unlink(missing_ok=True)

    def add(self, line: int, doc_id: str | None, reason: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"line": line, "id": doc_id, "reason": reason}, ensure_ascii=False) + "\n")

    def close(self) -> int:
        """Deduplicate (a batch redone after an interruption records its failures twice); return the count."""
        if not self.path.is_file():
            return 0
        rows = {}
        for text in self.path.read_text(encoding="utf-8").splitlines():
            row = json.loads(text)
            rows[(row["line"], row["id"])] = row
        if not rows:
            self.path.unlink()
            return 0
        ordered = sorted(rows.values(), key=lambda r: r["line"])
        self.path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered), encoding="utf-8")
        return len(ordered)


class _Progress:
    """The state file of one sync: which index generation it writes and the last line the engine acknowledged."""

    def __init__(self, path: Path, cfg: SyncConfig, identity: str):
        self.path, self.cfg, self.identity = path, cfg, identity
        state = json.loads(path.read_text()) if path.is_file() else None
        self.abandoned: str | None = None
        if state and not cfg.resume:
            log.warning("an interrupted sync of this corpus was found; starting over (use --resume to continue it)")
            self.abandoned = state.get("target")
            state = None
        if state and state.get("model") != identity:
            raise LLMQLError(
                f"{path}: the interrupted sync used model {state.get('model')!r}, not {identity!r}; "
                "run without --resume"
            )
        self.resumed = state is not None
        self.committed: int = state["committed_line"] if state else 0
        default_failures = str(Path(cfg.failures_file or "llmql-sync-failures.jsonl").resolve())
        self.failures_file: str = (state or {}).get("failures_file", default_failures)
        if state:
            self.target = state["target"]
        elif cfg.alias:
            self.target = f"{cfg.alias}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        else:
            self.target = cfg.index

    def save(self, index: str) -> None:
        state = {
            "target": index,
            "model": self.identity,
            "committed_line": self.committed,
            "failures_file": self.failures_file,
            "config": asdict(self.cfg),
        }
        _save_state(self.path, state)

    def commit(self, index: str, line: int) -> None:
        """Called only after the engine acknowledged every line up to `line`."""
        self.committed = max(self.committed, line)
        self.save(index)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _accept(batch: list, committed: int, seen: set[str], failures: FailureLog) -> list[SourceDoc]:
    """The batch's documents past the committed line; bad lines (only met with --on-error skip) are recorded."""
    docs: list[SourceDoc] = []
    for item in batch:
        if isinstance(item, BadLine):
            if item.line > committed:
                failures.add(item.line, item.id, item.reason)
            continue
        seen.add(item.id)
        if item.line > committed:
            docs.append(item)
    return docs


class _BatchWriter:
    """Encodes a batch (vectors, and [E] states with --ql-cache) and upserts what changed."""

    def __init__(self, cfg: SyncConfig, encoder, ql):
        self.cfg, self.encoder, self.ql = cfg, encoder, ql

    def write(
        self, backend, index: str, docs: list[SourceDoc], existing: dict, report: SyncReport, failures: FailureLog
    ) -> None:
        hashes = {d.id: content_hash(d, self.encoder.identity) for d in docs}
        todo = [d for d in docs if not (self.cfg.incremental and existing.get(d.id) == hashes[d.id])]
        report.unchanged += len(docs) - len(todo)
        if not todo:
            return
        vectors = self.encoder.encode_passages([d.text for d in todo], [d.title for d in todo])
        states = _pack_states(self.ql, todo, self.cfg.ql_cache)
        records = [
            Record(d.id, d.title, d.text, vectors[i], hashes[d.id], states[i] if states else None, d.fields)
            for i, d in enumerate(todo)
        ]
        result = backend.upsert(index, records)
        report.indexed += len(result.written)
        line_of = {d.id: d.line for d in todo}
        for doc_id, reason in result.failed:
            failures.add(line_of.get(doc_id, 0), doc_id, reason)


def _finish(cfg: SyncConfig, backend, index: str, report: SyncReport, gone: list[str]) -> None:
    """Deletions, refresh, and the alias swap that makes a new generation visible only once complete."""
    if gone:
        report.deleted = backend.delete(index, gone)
    backend.refresh(index)
    if cfg.alias:
        report.replaced = backend.swap_alias(cfg.alias, index)
        for old in report.replaced:
            if old != index:
                backend.drop_index(old)


def _ql_scorer(cfg: SyncConfig, device: str):
    if cfg.ql_cache == "none":
        return None
    from llmql.export.runtime import load_ql_scorer

    try:
        return load_ql_scorer(cfg.model, runtime=cfg.runtime, device=device)
    except FileNotFoundError as err:
        raise LLMQLError(f"--ql-cache needs an export made with `llmql-export --ql-scorer` or a model: {err}") from None


def _pack_states(ql, docs: list[SourceDoc], fmt: str) -> list[bytes] | None:
    if ql is None:
        return None
    from llmql.export.ql_cache import pack

    return pack(ql.end_states([d.text for d in docs], [d.title for d in docs]), fmt)
