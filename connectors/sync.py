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
    count_lines,
    read_corpus,
)
from llmql.connectors.registry import open_backend
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
    failures_file: str | None = None  # default: llmql-sync-failures.jsonl next to the state
    insecure: bool = False
    runtime: Literal["auto", "onnx", "torch"] = "auto"
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
    encoder = load_encoder(cfg.model, runtime=cfg.runtime)
    writer = _BatchWriter(cfg, encoder, _ql_scorer(cfg))
    options = dict(cfg.backend_options)
    if cfg.backend != "embedded" and cfg.insecure:
        options["verify_certs"] = False
    backend = open_backend(cfg.backend, cfg.url, **options)
    progress_file = _Progress(state_path(cfg), cfg, encoder.identity)
    if cfg.recreate and not progress_file.resumed:
        backend.drop_index(progress_file.target)
    info = backend.open_index(progress_file.target, encoder.dim, encoder.identity, create=True)  # refuses a mismatch
    progress_file.save(info.name)
    report = SyncReport(index=info.name, resumed_after_line=progress_file.committed, alias=cfg.alias)
    existing = dict(backend.content_hashes(info.name)) if (cfg.incremental or cfg.delete_missing) else {}
    seen: set[str] = set()
    failures: list[dict] = []
    total = count_lines(source)
    bar = tqdm(
        total=total,
        initial=min(progress_file.committed, total),
        unit="doc",
        desc=f"sync {info.name}",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for batch in _batches(read_corpus(source, cfg.corpus_format), cfg.batch_size):
            docs = _accept(batch, source, cfg.on_error, progress_file.committed, seen, failures)
            writer.write(backend, info.name, docs, existing, report, failures)
            progress_file.commit(info.name, batch[-1].line)
            bar.update(sum(1 for item in batch if item.line > report.resumed_after_line))
    finally:
        bar.close()
    _finish(cfg, backend, info.name, report, sorted(set(existing) - seen) if cfg.delete_missing else [])
    report.failed = len(failures)
    if failures:
        path = Path(cfg.failures_file or "llmql-sync-failures.jsonl")
        path.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
        report.failures_file = str(path)
    progress_file.remove()
    report.seconds = time.perf_counter() - start
    return report


class _Progress:
    """The state file of one sync: which index generation it writes and the last line the engine acknowledged."""

    def __init__(self, path: Path, cfg: SyncConfig, identity: str):
        self.path, self.cfg, self.identity = path, cfg, identity
        state = json.loads(path.read_text()) if path.is_file() else None
        if state and not cfg.resume:
            log.warning("an interrupted sync of this corpus was found; starting over (use --resume to continue it)")
            state = None
        if state and state.get("model") != identity:
            raise LLMQLError(
                f"{path}: the interrupted sync used model {state.get('model')!r}, not {identity!r}; "
                "run without --resume"
            )
        self.resumed = state is not None
        self.committed: int = state["committed_line"] if state else 0
        if state:
            self.target = state["target"]
        elif cfg.alias:
            self.target = f"{cfg.alias}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        else:
            self.target = cfg.index

    def save(self, index: str) -> None:
        _save_state(
            self.path,
            {"target": index, "model": self.identity, "committed_line": self.committed, "config": asdict(self.cfg)},
        )

    def commit(self, index: str, line: int) -> None:
        """Called only after the engine acknowledged every line up to `line`."""
        self.committed = max(self.committed, line)
        self.save(index)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _accept(
    batch: list, source: Path, on_error: str, committed: int, seen: set[str], failures: list[dict]
) -> list[SourceDoc]:
    """The batch's documents past the committed line; bad lines fail the sync or are recorded (`on_error`)."""
    docs: list[SourceDoc] = []
    for item in batch:
        if isinstance(item, BadLine):
            if on_error == "fail":
                raise DataError(f"{source}:{item.line}: {item.reason} (use --on-error skip to skip it)")
            if item.line > committed:
                failures.append({"line": item.line, "id": item.id, "reason": item.reason})
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
        self, backend, index: str, docs: list[SourceDoc], existing: dict, report: SyncReport, failures: list[dict]
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
        failures += [{"line": line_of[i], "id": i, "reason": r} for i, r in result.failed]


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


def _ql_scorer(cfg: SyncConfig):
    if cfg.ql_cache == "none":
        return None
    from llmql.export.runtime import load_ql_scorer

    try:
        return load_ql_scorer(cfg.model, runtime=cfg.runtime)
    except FileNotFoundError as err:
        raise LLMQLError(f"--ql-cache needs an export made with `llmql-export --ql-scorer` or a model: {err}") from None


def _pack_states(ql, docs: list[SourceDoc], fmt: str) -> list[bytes] | None:
    if ql is None:
        return None
    from llmql.export.ql_cache import pack

    return pack(ql.end_states([d.text for d in docs], [d.title for d in docs]), fmt)
