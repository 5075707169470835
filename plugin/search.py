"""`HybridSearcher`: BM25 and dense kNN from the backend's own engines, client-side fusion, optional QL
re-ranking of the fused top-n. Every stage's scores and time are kept on the result (for --explain)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from llmql.connectors.base import Filter, Hit, SearchBackend
from llmql.plugin.fusion import fuse, rerank_head
from llmql.plugin.index_check import check_models
from llmql.plugin.rerank import QLReranker
from llmql.plugin.search_settings import SearchConfig, search_config
from llmql.train.core.ql_base import QueryLikelihoodScorer
from llmql.train.core.text_encoder import TextEncoder

__all__ = ["HybridSearcher", "ResultHit", "SearchConfig", "SearchResult", "default_config"]


@dataclass
class ResultHit:
    id: str
    score: float
    title: str = ""
    text: str = ""
    fields: dict = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)  # each stage's own score for this document
    passage: tuple[int, int] | None = None  # chunked index: [start, end) of the text's best passage (QL's, if
    # re-ranked, else the dense one's), for highlighting


@dataclass
class SearchResult:
    query: str
    hits: list[ResultHit]
    timings_ms: dict[str, float]
    config: SearchConfig
    ql_path: str | None = None


def default_config(encoder: TextEncoder | None = None, ql_scorer: QueryLikelihoodScorer | None = None) -> SearchConfig:
    config = search_config(getattr(encoder, "directory", None))
    return config if ql_scorer is not None else replace(config, rerank_depth=0)


class HybridSearcher:
    def __init__(
        self,
        backend: SearchBackend,
        index: str,
        encoder: TextEncoder | None = None,
        ql_scorer: QueryLikelihoodScorer | None = None,
        config: SearchConfig | None = None,
        verify: bool = True,
    ):
        """Without `config`, the encoder's tuned settings (search.json beside its model) or the untuned defaults;
        QL re-ranking is left off when no scorer is given. `verify` checks the models against the index once (see
        `check_models`); a caller that already did (the service, per index) passes False."""
        self.backend = backend
        self.index = index
        self.encoder = encoder
        self.config = config or default_config(encoder, ql_scorer)
        if self.config.mode != "bm25" and encoder is None:
            raise ValueError(f"mode {self.config.mode!r} needs an encoder")
        if self.config.rerank_depth and ql_scorer is None:
            raise ValueError("QL re-ranking (rerank_depth > 0) needs a QL scorer")
        ql_path = self.config.ql_path
        if verify:
            ql_path = check_models(backend, index, encoder, ql_scorer, ql_path)
        self.reranker = QLReranker(ql_scorer, backend, index, ql_path) if ql_scorer else None

    @property
    def depth(self) -> int:
        """How far the fused list goes: pages (offset + k) within it never change as the offset moves."""
        cfg = self.config
        return {"bm25": cfg.bm25_k, "dense": cfg.knn_k}.get(cfg.mode, max(cfg.bm25_k, cfg.knn_k))

    def search(self, query: str, k: int = 10, filter: Filter | None = None, offset: int = 0) -> SearchResult:
        """The hits ranked offset+1 .. offset+k of the fused (and re-ranked) list; past its end, an empty page.
        Every page comes from the same candidate lists (`depth`), so pages never overlap or skip a hit; a page
        reaching past `depth` is refused rather than answered from longer lists that would reorder it."""
        if not query.strip():
            raise ValueError("empty query")
        if offset < 0 or offset + k > max(self.depth, k):
            raise ValueError(
                f"from={offset} + size={k} goes past the {self.depth} candidates a page is ranked from; raise the "
                "first stages' depth to page further (llmql-search --depth; bm25_k and knn_k of a SearchConfig)"
            )
        cfg = self.config
        timings: dict[str, float] = {}
        stages, hits = self._first_stages(query, k, filter, timings)
        if len(stages) > 1:
            scores = _timed(timings, "fusion", lambda: fuse(stages, cfg.fusion, cfg.weights, cfg.rrf_k))
            stages["fused"] = scores
        else:
            scores = next(iter(stages.values()))
        ql_path = None
        passages = {d: h.passage for d, h in hits.items() if h.passage is not None}
        order = sorted(scores, key=lambda d: (-scores[d], d))
        if cfg.rerank_depth and self.reranker is not None:
            top, tail = order[: cfg.rerank_depth], order[cfg.rerank_depth :]
            result = self.reranker.rerank(query, top)
            timings["ql_rerank"] = result.seconds * 1000
            ql_path = result.path
            stages["ql"] = result.scores
            passages.update(result.passages)
            # the re-ranked head stays above the tail, whose order is unchanged
            scores = rerank_head(scores, result.scores, top, tail, cfg.ql_weight)
            order = sorted(scores, key=lambda d: (-scores[d], d))
        out = [
            ResultHit(
                d,
                scores[d],
                hits[d].title,
                hits[d].text,
                hits[d].fields,
                {name: s[d] for name, s in stages.items() if d in s},
                passages.get(d),
            )
            for d in order[offset : offset + k]
        ]
        return SearchResult(query, out, timings, cfg, ql_path)

    def _first_stages(
        self, query: str, k: int, filter: Filter | None, timings: dict[str, float]
    ) -> tuple[dict[str, dict[str, float]], dict[str, Hit]]:
        """Each first stage's scores by document id (`bm25`, `dense`, as the mode asks) and every hit found."""
        cfg = self.config
        stages: dict[str, dict[str, float]] = {}
        hits: dict[str, Hit] = {}
        if cfg.mode in ("hybrid", "bm25"):
            found = _timed(timings, "bm25", lambda: self.backend.bm25(self.index, query, max(cfg.bm25_k, k), filter))
            stages["bm25"] = {h.id: h.score for h in found}
            hits.update({h.id: h for h in found})
        if cfg.mode in ("hybrid", "dense"):
            vector = _timed(timings, "encode", lambda: self.encoder.encode_queries([query])[0])
            found = _timed(timings, "knn", lambda: self.backend.knn(self.index, vector, max(cfg.knn_k, k), filter))
            stages["dense"] = {h.id: h.score for h in found}
            hits.update({h.id: h for h in found})
        return stages, hits


def _timed(timings: dict[str, float], name: str, fn):
    """`fn()`, its wall time in milliseconds recorded under `name`."""
    start = time.perf_counter()
    out = fn()
    timings[name] = (time.perf_counter() - start) * 1000
    return out
