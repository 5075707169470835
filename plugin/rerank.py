"""QL re-ranking: log P(query | document) from the stage-1 model, by the fast or the full path.

Fast path: the candidates' [E] states were stored at sync time (`llmql-sync --ql-cache`); only the query tokens
run, once per candidate, against one cached position. Full path: each candidate's text is run through the
model again. Both give the same scores (checked in tests); the fast one skips the documents entirely.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from llmql.connectors.base import Backend


@dataclass
class RerankResult:
    scores: dict[str, float]  # log P(q | d)
    path: str  # "cached" or "full"
    seconds: float
    cached: int  # candidates scored from cached states


class QLReranker:
    def __init__(self, scorer, backend: Backend | None = None, index: str | None = None, path: str = "auto"):
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
        cached_ids = [i for i in ids if records.get(i) is not None and records[i].ql_state]
        if self.path == "cached" and len(cached_ids) < len(ids):
            missing = sorted(set(ids) - set(cached_ids))[:5]
            raise ValueError(f"no cached QL states for {missing}...; sync with --ql-cache or use path=full")
        if self.path != "full" and cached_ids and hasattr(self.scorer, "score_states"):
            from llmql.export.ql_cache import unpack

            states = unpack([records[i].ql_state for i in cached_ids])
            scores.update(zip(cached_ids, self.scorer.score_states(query, states).tolist(), strict=True))
        rest = [i for i in ids if i not in scores]
        if rest:
            if texts is not None:
                by_id = dict(zip(ids, zip(titles or [""] * len(ids), texts, strict=True), strict=True))
                pairs = [by_id[i] for i in rest]
            else:
                missing = [i for i in rest if i not in records]
                if missing:
                    raise KeyError(f"documents not in the index: {missing[:5]}")
                pairs = [(records[i].title, records[i].text) for i in rest]
            full = self.scorer.score(query, [t for _, t in pairs], [h for h, _ in pairs])
            scores.update(zip(rest, full.tolist(), strict=True))
        path = (
            "cached"
            if len(cached_ids) == len(ids) and self.path != "full"
            else ("full" if not cached_ids or self.path == "full" else "mixed")
        )
        return RerankResult(scores, path, time.perf_counter() - start, len(ids) - len(rest))
