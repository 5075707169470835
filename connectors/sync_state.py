"""What a sync keeps on disk so that it can be resumed and reports every failure: its progress file and its
failures file.

The progress file (under `$LLMQL_CACHE/sync`, keyed by backend, location, index or alias, and corpus) names the
index generation being written, the corpus file's digest, and the last corpus line and the number of documents
the engine acknowledged; it is committed only after the engine confirmed a batch. A resume does not trust the
line: it writes every document the index does not hold as the corpus has it (by content hash), and the file only
says what changed since (the corpus, or an index holding fewer documents than were confirmed). The failures file
gets each failed document as it is found, so a resumed sync still reports the ones from before its interruption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmql.connectors.corpus import corpus_file
from llmql.connectors.shards import WHOLE, Shard
from llmql.train.core.config import write_json_atomic
from llmql.train.core.errors import LLMQLError
from llmql.train.core.model_sources import cache_root

log = logging.getLogger(__name__)


def state_path(cfg: Any, shard: Shard = WHOLE) -> Path:
    """Where progress of this (backend, location, index or alias, corpus, shard) is kept (`cfg`: a SyncConfig)."""

    key = [cfg.backend, cfg.url, cfg.alias or cfg.index, str(corpus_file(cfg.corpus).resolve())]
    key = json.dumps(key + ([str(shard)] if shard.count > 1 else []))
    return cache_root() / "sync" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


class FailureLog:
    """Failed documents, appended to the failures file as they are found (from the reading and the writing
    thread alike, hence the lock)."""

    def __init__(self, path: Path, keep: bool):
        self.path = path
        self._lock = threading.Lock()
        if not keep:
            path.unlink(missing_ok=True)

    def add(self, line: int, doc_id: str | None, reason: str) -> None:
        row = json.dumps({"line": line, "id": doc_id, "reason": reason}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(row)

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


class SyncProgress:
    """The progress file of one sync (or one shard of it): which index generation it writes and the last line the
    engine acknowledged. Each shard lists its failures in its own file (FILE.shard-I-of-N.jsonl)."""

    def __init__(self, path: Path, cfg: Any, identity: str, shard: Shard = WHOLE):
        self.path, self.cfg, self.identity, self.shard = path, cfg, identity, shard
        state = json.loads(path.read_text()) if path.is_file() else None
        self.abandoned: str | None = None  # the generation an interrupted sync that is started over was writing
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
        self.confirmed: int = (state or {}).get("confirmed_documents", 0)  # documents the engine acknowledged
        self.corpus: str | None = (state or {}).get("corpus")  # the corpus digest when it was interrupted
        failures = Path(cfg.failures_file or "llmql-sync-failures.jsonl")
        if shard.count > 1:
            failures = failures.with_name(f"{failures.stem}.shard-{shard.index}-of-{shard.count}{failures.suffix}")
        default_failures = str(failures.resolve())
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
            "confirmed_documents": self.confirmed,
            "corpus": self.corpus,
            "failures_file": self.failures_file,
            "config": asdict(self.cfg),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, state)

    def commit(self, index: str, line: int, written: int = 0) -> None:
        """Called only after the engine acknowledged every line up to `line` (`written` documents more)."""
        self.committed = max(self.committed, line)
        self.confirmed += written
        self.save(index)

    def explain_resume(self, corpus: str, held: int) -> None:
        """Say what a resume finds changed since the interruption; it writes whatever the index lacks either way."""
        if not self.resumed:
            return
        if self.corpus is not None and self.corpus != corpus:
            log.warning(
                "the corpus changed since the interrupted sync: every document is checked against the index by "
                "content hash, and the ones it lacks or holds in another version are written"
            )
        elif held < self.confirmed:
            log.warning(
                "the index holds %d documents of the %d the interrupted sync confirmed (deleted or emptied since?): "
                "the ones it lacks are written again",
                held,
                self.confirmed,
            )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
