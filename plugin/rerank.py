"""QL re-ranking: log P(query | document) from the stage-1 model, by the fast or the full path.

Fast path: the candidates' [E] states were stored at sync time (`llmql-sync --end-states`); only the query tokens
run, once per candidate, against one cached position. Full path: each candidate's text is run through the
model again. Both give the same scores (checked in tests); the fast one skips the documents entirely. A chunked
document scores as its best passage (MaxP), by either path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmql.connectors.base import SearchBackend
from llmql.train.core.chunking import max_per_key, passage_parts
from llmql.train.core.ql_base import QueryLikelihoodScorer


@dataclass
class RerankResult:
    scores: dict[str, float]  # log P(q | d)
    path: str  # "cached" or "full"
    seconds: float
    cached: int  # candidates scored from cached states
    passages: dict[str, tuple[int, int]] = field(default_factory=dict)  # chunked: each document's best passage


class QLReranker:
    def __init__(
        self,
        scorer: QueryLikelihoodScorer,
        backend: SearchBackend | None = None,
        index: str | None = None,
        path: str = "auto",
    ):
        """scorer: OnnxQLScorer (or torch QLScorer for `full`). path: cached, full, or auto (cached where stored)."""
        if path not in ("auto", "cached", "full"):
            raise ValueError(f"QL path must be auto, cached or full, not {path!r}")
        self.scorer = scorer
        self.backend = backend
        self.index = index
        self.path = path

    def rerank(
        self, query: str, ids: Sequence[str], texts: Sequence[str] | None = None, titles: Sequence[str] | None = None
    ) -> RerankResult:
        """Score candidates by id (texts and states fetched from the index) or by given texts."""
        start = time.perf_counter()
        ids = list(ids)
        if not ids:
            return RerankResult({}, self.path, 0.0, 0)
        records = {}
        if self.backend is not None and (texts is None or self.path != "full"):
            records = self.backend.fetch(self.index, ids, with_state=self.path != "full")
        scores: dict[str, float] = {}
        spans: dict[str, tuple[int, int]] = {}
        cached_ids = [i for i in ids if records.get(i) is not None and _has_states(records[i])]
        if self.path == "cached" and len(cached_ids) < len(ids):
            missing = sorted(set(ids) - set(cached_ids))[:5]
            raise ValueError(f"no cached QL states for {missing}...; sync with --end-states or use path=full")
        if self.path != "full" and cached_ids and hasattr(self.scorer, "score_states"):
            from llmql.connectors.state_blobs import unpack

            units = [u for i in cached_ids for u in _units(records[i])]
            states = unpack([state for _, _, _, state in units])
            found = self.scorer.score_states(query, states).tolist()
            _keep_best(units, found, scores, spans)
        rest = [i for i in ids if i not in scores]
        if rest:
            if texts is not None:
                by_id = dict(zip(ids, zip(titles or [""] * len(ids), texts, strict=True), strict=True))
                units = [(i, 0, None, by_id[i]) for i in rest]
            else:
                missing = [i for i in rest if i not in records]
                if missing:
                    raise KeyError(f"documents not in the index: {missing[:5]}")
                units = [u for i in rest for u in _units(records[i], texts=True)]
            parts = [part for _, _, _, part in units]
            full = self.scorer.score(query, [t for _, t in parts], [h for h, _ in parts])
            _keep_best(units, full.tolist(), scores, spans)
        path = (
            "cached"
            if len(cached_ids) == len(ids) and self.path != "full"
            else ("full" if not cached_ids or self.path == "full" else "mixed")
        )
        return RerankResult(scores, path, time.perf_counter() - start, len(ids) - len(rest), spans)


def _has_states(record) -> bool:
    return bool(record.end_states) or (bool(record.passages) and all(p.end_states for p in record.passages))


def _units(record, texts: bool = False) -> list[tuple[str, int, tuple[int, int] | None, object]]:
    """What QL scores for a document: (id, passage, span, packed states, or (title, text) with texts=True) for
    each passage of a chunked document, else the one whole document."""
    if not record.passages:
        return [(record.id, 0, None, (record.title, record.text) if texts else record.end_states)]
    spans = [(p.start, p.end) for p in record.passages]
    parts = passage_parts(record.title, record.text, spans) if texts else [p.end_states for p in record.passages]
    return [(record.id, n, span, part) for n, (span, part) in enumerate(zip(spans, parts, strict=True))]


def _keep_best(units: list, found: list[float], scores: dict, spans: dict) -> None:
    """MaxP: each document's best passage score (and that passage's span, for a chunked document)."""
    span_of = {(doc, n): span for doc, n, span, _ in units}
    for doc, (score, n) in max_per_key((u[0], s, u[1]) for u, s in zip(units, found, strict=True)).items():
        scores[doc] = score
        if span_of[(doc, n)] is not None:
            spans[doc] = span_of[(doc, n)]
