"""`sync`: corpus -> embeddings -> a search index, idempotent, resumable and honest about failures.

Documents keep their source ids, so writing twice leaves one copy. The corpus is read once in full before the
first write (a bad corpus changes nothing), then in engine batches: each batch is encoded (in encoder batches
bounded by a token budget) while the previous one is being written, and progress is committed once the engine
has acknowledged a batch. `resume` continues the interrupted sync's index generation and writes every document
the index does not hold as the corpus has it (an incremental sync by content hash): a changed corpus or an
index emptied meanwhile loses nothing. With `alias`, a new index generation is built and the alias swapped only
when it is complete. Every sync ends by checking the index against the corpus (`sync_check`); `delete_missing`
never deletes a document whose line was skipped, and deletes nothing when a line could not be read at all.

Sharded (`shard="I/N"`, or each rank under torchrun / accelerate launch) a process writes only its share of
the documents, and resumes on its own; launched together, the shards' whole-index steps (recreate, deletions,
the alias swap) run once on rank 0, the swap only after every shard has confirmed its last batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llmql.connectors.base import Record
from llmql.connectors.corpus import (
    BadLine,
    CorpusFormat,
    SourceDoc,
    corpus_file,
    corpus_fingerprint,
    read_corpus,
    scan_corpus,
)
from llmql.connectors.records import DocumentEncoder
from llmql.connectors.registry import DIRECTORY_ENGINES, open_backend
from llmql.connectors.shards import Shard, ShardGroup, shard_group
from llmql.connectors.sync_check import Verification, verify
from llmql.connectors.sync_state import FailureLog, SyncProgress, state_path
from llmql.export.runtime import load_encoder, load_ql_scorer
from llmql.train.core.batching import prefetched
from llmql.train.core.chunking import Chunking, check_chunking
from llmql.train.core.device import BatchSizes, batch_sizes, resolve_device
from llmql.train.core.errors import DataError, LLMQLError

__all__ = ["SyncConfig", "SyncReport", "state_path", "sync"]

log = logging.getLogger(__name__)

# Documents tokenised a call, at least: the CPU's engine batches of 64 go 8 at a time (one tokenizer call over
# 64 texts left its threads unevenly loaded: the stub-model sync ran at 0.74x the tokenisation rate, 0.85x so)
TOKENIZE_BLOCK = 512


@dataclass(frozen=True)
class SyncConfig:
    corpus: str
    model: str  # an llmql-export directory (ONNX) or a model directory (torch)
    backend: str = "embedded"
    url: str = "./llmql-index"  # directory for the embedded backend
    index: str = "llmql"
    alias: str | None = None
    # None: the device's defaults (llmql.train.core.device.batch_sizes: 64 / 32 / 8,192 on a CPU, more on a GPU)
    batch_size: int | None = None  # documents a bulk write (and a committed step of progress)
    encode_batch_size: int | None = None  # rows a model call, at most
    max_padded_tokens: int | None = None  # padded tokens a model call, at most
    recreate: bool = False
    incremental: bool = False
    delete_missing: bool = False
    resume: bool = False
    on_error: Literal["skip", "fail"] = "fail"
    end_states: Literal["none", "fp16", "int8"] = "none"
    corpus_format: CorpusFormat = field(default_factory=CorpusFormat)
    failures_file: str | None = None  # default: llmql-sync-failures.jsonl in the working directory
    insecure: bool = False
    runtime: Literal["auto", "onnx", "torch"] = "auto"
    device: str = "auto"  # auto, cpu, cuda, cuda:N (llmql.train.core.device.resolve_device)
    shard: str | None = None  # "I/N": this process's share of the documents; None: the launcher's rank, or all
    chunk: bool = False  # long documents become passages (implied by chunk_tokens / a chunk_overlap > 0)
    chunk_tokens: int | None = None  # body tokens a passage; None: the model's passage length
    chunk_overlap: int = 0  # tokens neighbouring passages share
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
    shard: str | None = None
    cut: int = 0  # documents longer than the model's passage length: dense and QL see only their beginning
    chunking: str | None = None  # "tokens/overlap" when documents were split into passages
    passages: int = 0  # passages written (chunked syncs)
    split: int = 0  # documents that became more than one passage
    skipped_ids: list[str] = field(default_factory=list)  # ids of lines skipped (--on-error skip): never deleted
    deletions_withheld: int = 0  # --delete-missing found these gone, but unreadable lines hide which: kept
    verified: Verification | None = None  # the index checked against the corpus at the end

    @property
    def ok(self) -> bool:
        return self.failed == 0 and (self.verified is None or self.verified.ok)


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def sync(cfg: SyncConfig, progress: bool = True, *, encoder=None, ql_scorer=None) -> SyncReport:
    """Encode and write `cfg.corpus` into the index; see the module docstring for the guarantees. `encoder` and
    `ql_scorer`: models already loaded (a notebook's, a benchmark's), used instead of loading `cfg.model`."""

    start = time.perf_counter()
    source = corpus_file(cfg.corpus)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: corpus file not found")
    group = shard_group(cfg.shard)
    _check_shard_options(cfg, group)
    device = resolve_device(cfg.device)  # a GPU that is not here is refused before anything is read
    scan = _validate(source, cfg)  # before anything is written: a bad corpus changes no index
    backend = _backend(cfg)  # an unreachable engine or a wrong --alias is refused before a model is loaded
    encoder = encoder or load_encoder(cfg.model, runtime=cfg.runtime, device=device)
    ql = ql_scorer if ql_scorer is not None and cfg.end_states != "none" else _ql_scorer(cfg, device)
    chunking = _chunking(cfg, encoder, ql)
    sizes = _batch_sizes(cfg, device, encoder.dim)
    shard = group.shard
    state = SyncProgress(state_path(cfg, shard), cfg, encoder.identity, shard)
    # a resume trusts no line number: it writes whatever the index lacks, as an incremental sync would
    writer = DocumentEncoder(encoder, ql, sizes, chunking, cfg.incremental or state.resumed, cfg.end_states)
    label = None if chunking is None else str(chunking)  # how the index records it
    fingerprint = corpus_fingerprint(source)
    if not state.resumed:
        state.corpus = fingerprint  # in the progress file from its first save
    info, fresh = _open_target(cfg, backend, state, group, encoder, label)
    report = SyncReport(index=info.name, resumed_after_line=state.committed, alias=cfg.alias, shard=_label(shard))
    report.chunking = label
    existing = {}
    if writer.incremental or cfg.delete_missing:
        existing = {i: h for i, h in backend.content_hashes(info.name) if shard.owns(i)}
    state.explain_resume(fingerprint, len(existing))
    state.corpus = fingerprint
    # every line is read again, so every failure is found again: a resume starts the file afresh (a write that
    # failed before the interruption and succeeds now is no longer reported)
    failures = FailureLog(Path(state.failures_file), keep=False)
    read = _pipeline(source, cfg, writer, backend, state, report, existing, failures, fresh, scan.lines, progress)
    for name, value in vars(writer.counts).items():
        setattr(report, name, value)
    report.skipped_ids = sorted(read.skipped)
    gone = sorted(set(existing) - read.seen) if cfg.delete_missing else []
    gone = [i for part in group.gather(gone) for i in part]  # every shard has confirmed its last batch here
    unreadable = sum(group.gather(read.unreadable))
    if gone and unreadable:
        log.warning(
            "%d line(s) could not be read, so which documents left the corpus is unknown: none of the %d "
            "--delete-missing found gone was deleted (fix the lines and sync again)",
            unreadable,
            len(gone),
        )
        report.deletions_withheld, gone = len(gone), []
    if group.leader:
        _finish(cfg, backend, info.name, report, gone)
    group.barrier()  # the swap is done before any shard forgets its progress
    report.verified = verify(read.expected, ((i, h) for i, h in backend.content_hashes(info.name) if shard.owns(i)))
    report.failed = failures.close()
    report.failures_file = str(failures.path) if report.failed else None
    state.remove()
    report.seconds = time.perf_counter() - start
    return report


def _backend(cfg: SyncConfig):
    """The engine, opened; an --alias that names an index (not an alias) is refused here, before any model is
    loaded or generation written (the swap at the end would refuse it, after the whole corpus was encoded)."""
    options = dict(cfg.backend_options)
    if cfg.backend not in DIRECTORY_ENGINES and cfg.insecure:
        options["verify_certs"] = False
    backend = open_backend(cfg.backend, cfg.url, **options)
    if cfg.alias and backend.resolve(cfg.alias) == cfg.alias:
        raise LLMQLError(
            f"{cfg.url}: --alias {cfg.alias!r} names an index, not an alias; choose another alias name (or drop "
            "that index); nothing was written"
        )
    return backend


def _check_shard_options(cfg: SyncConfig, group: ShardGroup) -> None:
    """Shards started one by one cannot know when the others are done: the whole-index steps need a launcher."""
    whole = [
        flag
        for flag, on in (("--recreate", cfg.recreate), ("--alias", cfg.alias), ("--delete-missing", cfg.delete_missing))
        if on
    ]
    if group.shard.count > 1 and not group.launched and whole:
        raise LLMQLError(
            f"{', '.join(whole)} act on the whole index and must run once, after every shard has finished: start "
            f"the shards together with `torchrun --nproc-per-node {group.shard.count} -m llmql.connectors.cli ...` "
            "(or accelerate launch) instead of --shard"
        )


def _chunking(cfg: SyncConfig, encoder, ql) -> Chunking | None:
    """The passage settings, checked against every model that reads the passages, before anything is written."""
    if not (cfg.chunk or cfg.chunk_tokens is not None or cfg.chunk_overlap):
        return None
    windows = [m.tokenizer.config.max_passage_tokens for m in (encoder, ql) if m is not None]
    tokens = cfg.chunk_tokens if cfg.chunk_tokens is not None else min(windows)
    try:
        return check_chunking(tokens, cfg.chunk_overlap, min(windows))
    except ValueError as err:
        raise LLMQLError(f"{err}; nothing was written") from None


def _open_target(cfg: SyncConfig, backend, state: SyncProgress, group: ShardGroup, encoder, chunking: str | None):
    """Agree on the index generation (rank 0's), prepare it on rank 0 before any rank writes, open it on every
    rank. Returns (IndexInfo, fresh): fresh when the index was empty before this sync and no shard resumes."""
    targets = group.gather(state.target if state.resumed else None)
    resumed = [t for t in targets if t is not None]
    if len(set(resumed)) > 1:
        raise LLMQLError(
            f"the shards' interrupted syncs wrote different indexes {sorted(set(resumed))}; run without --resume"
        )
    state.target = resumed[0] if resumed else group.share(state.target)
    abandoned = sorted({a for a in group.gather(state.abandoned) if a})
    with group.leader_first():
        if group.leader:
            for generation in abandoned:
                _drop_abandoned(backend, cfg, generation)
            if cfg.recreate and not resumed:
                backend.drop_index(state.target)
        fields = cfg.corpus_format.keep_fields
        info = backend.open_index(
            state.target,
            encoder.dim,
            encoder.identity,
            create=True,
            fields=fields,
            chunking=chunking,
        )
    state.save(info.name)
    fresh = group.share(info.count == 0) and not resumed
    return info, fresh


def _label(shard: Shard) -> str | None:
    return str(shard) if shard.count > 1 else None


@dataclass
class ReadCorpus:
    """What the pipeline learnt of the corpus: the ids it holds (a skipped line's among them, so that
    --delete-missing keeps its document), the ids of skipped lines, how many lines had no readable id, and each
    document's content hash the index must end up holding (less the documents whose write failed)."""

    seen: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    unreadable: int = 0
    expected: dict[str, str] = field(default_factory=dict)


def _pipeline(source, cfg, writer, backend, state, report, existing, failures, fresh, lines, progress) -> ReadCorpus:
    """Read, tokenise, encode and write as a pipeline: the next block of engine batches (`TOKENIZE_BLOCK`
    documents or one batch, whichever is more) is tokenised on one thread while the model encodes this block's
    batches one by one and another thread writes the batch before (a single writer keeps the writes, and so the
    committed progress, in corpus order). A resume reads from the first line: what the index already holds is
    skipped by its content hash, not by the line the interrupted sync reached."""
    from tqdm.auto import tqdm

    read = ReadCorpus()
    bar = tqdm(total=lines, unit="doc", desc=f"sync {report.index}", disable=not progress)

    def store(records: list[Record], line_of: dict[str, int], last: int, count: int) -> None:
        result = backend.upsert(report.index, records, fresh=fresh) if records else None
        written = 0
        if result is not None:
            written = len(result.written)
            report.indexed += written
            for doc_id, reason in result.failed:
                failures.add(line_of.get(doc_id, 0), doc_id, reason)
                read.expected.pop(doc_id, None)  # reported as failed; the check does not count it twice
        state.commit(report.index, last, written)
        bar.update(count)

    def tokenize(block: list[list]):
        works = writer.tokenize([_accept(batch, read, failures, state.shard) for batch in block], existing)
        for work in works:
            read.expected.update(work.hashes)
        return works

    pending: Future | None = None
    size = writer.sizes.documents
    blocks = _batches(_batches(read_corpus(source, cfg.corpus_format), size), -(-TOKENIZE_BLOCK // size))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmql-sync-write") as pool:
        try:
            for block, works in prefetched(blocks, tokenize):
                for batch, work in zip(block, works, strict=True):
                    records = writer.encode(work)  # overlaps the write in flight and the next block's tokenising
                    if pending is not None:
                        pending.result()  # a failed write stops the sync here, before anything later is committed
                    pending = pool.submit(store, records, work.line_of, batch[-1].line, len(batch))
            if pending is not None:
                pending.result()
        finally:
            bar.close()
    return read


def _batch_sizes(cfg: SyncConfig, device: str, hidden: int) -> BatchSizes:
    """The device's defaults (`batch_sizes`), each replaced by the option given."""
    default = batch_sizes(device, hidden)
    return BatchSizes(
        cfg.batch_size or default.documents,
        cfg.encode_batch_size or default.rows,
        cfg.max_padded_tokens or default.padded_tokens,
    )


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


def _accept(batch: list, read: ReadCorpus, failures: FailureLog, shard: Shard) -> list[SourceDoc]:
    """This shard's documents in the batch; its bad lines (only met with --on-error skip) are recorded (those
    without an id by shard 0), and their ids kept from deletion."""
    docs: list[SourceDoc] = []
    for item in batch:
        if not (shard.owns(item.id) if item.id else shard.index == 0):
            continue
        if isinstance(item, BadLine):
            if item.id is None:
                read.unreadable += 1
            else:
                read.seen.add(item.id)
                read.skipped.add(item.id)
            failures.add(item.line, item.id, item.reason)
            continue
        read.seen.add(item.id)
        docs.append(item)
    return docs


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
    if cfg.end_states == "none":
        return None

    try:
        return load_ql_scorer(cfg.model, runtime=cfg.runtime, device=device)
    except FileNotFoundError as err:
        raise LLMQLError(
            f"--end-states needs an export made with `llmql-export --ql-scorer` or a model: {err}"
        ) from None
