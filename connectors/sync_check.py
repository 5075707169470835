"""What every sync checks before it reports: that the index now holds each document of the corpus as written.

The corpus side is each document's content hash, taken as the sync read it; the index side is what the engine
returns for its stored hashes after the refresh. A document missing, or held in another version, is named in
the report, and the command fails: a sync that exits 0 has been seen to hold the corpus. The digest (sha256 of
the sorted id and hash pairs) is what the two sides agreed on, so two syncs of one corpus can be compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Verification:
    documents: int  # corpus documents the index must hold (this shard's, less the ones whose write failed)
    digest: str  # of the corpus side's (id, content hash) pairs
    missing: list[str] = field(default_factory=list)  # not in the index
    stale: list[str] = field(default_factory=list)  # in the index with another content hash

    @property
    def ok(self) -> bool:
        return not self.missing and not self.stale

    def summary(self) -> dict:
        shown = {"missing": self.missing[:20], "stale": self.stale[:20]}
        return {
            "documents": self.documents,
            "digest": self.digest,
            "ok": self.ok,
            **{k: v for k, v in shown.items() if v},
        }


def digest(pairs: Iterable[tuple[str, str]]) -> str:
    """sha256 over sorted (id, content hash) pairs, each id and hash length-prefixed (no separator ambiguity)."""
    h = hashlib.sha256()
    for doc_id, content in sorted(pairs):
        for part in (doc_id.encode("utf-8"), content.encode("ascii")):
            h.update(len(part).to_bytes(8, "little") + part)
    return "sha256:" + h.hexdigest()[:32]


def verify(expected: dict[str, str], stored: Iterable[tuple[str, str]]) -> Verification:
    """`expected` (id -> content hash from the corpus) against the index's stored (id, hash) pairs."""
    held = {doc_id: content for doc_id, content in stored if doc_id in expected}
    missing = sorted(i for i in expected if i not in held)
    stale = sorted(i for i, content in expected.items() if i in held and held[i] != content)
    return Verification(len(expected), digest(expected.items()), missing, stale)
