"""Choosing fusion and QL re-ranking settings on held-out queries, as pure functions over per-query scores.

A briefly trained dense retriever fused with BM25 at fixed equal weights can rank below BM25 alone; so can a QL
re-rank at a fixed weight. The tuner searches a small grid (a convex combination of min-max-normalised BM25 and
dense scores from pure BM25 to pure dense, and RRF; then the QL weight and re-rank depth) by nDCG@10, and keeps
the simpler setting unless another is strictly better, so a retriever that does not help is given weight 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmql.plugin.fusion import fuse, rerank_head

Scores = Mapping[str, float]
DENSE_WEIGHTS = tuple(i / 10 for i in range(11))  # 0: BM25 alone ... 1: dense alone
QL_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)  # 0: no QL ... 1: QL alone over the head
DEPTHS = (10, 20, 50, 100)


@dataclass(frozen=True)
class Fusion:
    method: str  # "minmax" (convex combination) or "rrf"
    dense_weight: float = 0.5  # for minmax; RRF weighs both lists equally

    @property
    def weights(self) -> dict[str, float]:
        if self.method == "rrf":
            return {"bm25": 1.0, "dense": 1.0}
        return {"bm25": round(1.0 - self.dense_weight, 6), "dense": self.dense_weight}

    @property
    def mode(self) -> str:
        """What a searcher runs: a pure end needs only one retriever."""
        if self.method == "minmax" and self.dense_weight == 0.0:
            return "bm25"
        if self.method == "minmax" and self.dense_weight == 1.0:
            return "dense"
        return "hybrid"


@dataclass(frozen=True)
class Trial:
    setting: dict
    ndcg10: float


def fusion_grid() -> list[Fusion]:
    """Simplest first: BM25 alone, then rising dense weight, then RRF (ties keep the earlier setting)."""
    return [Fusion("minmax", w) for w in DENSE_WEIGHTS] + [Fusion("rrf")]


def fused_run(stages: Mapping[str, Mapping[str, Scores]], fusion: Fusion) -> dict[str, dict[str, float]]:
    """{query: {"bm25": scores, "dense": scores}} -> {query: fused scores} (one stage: its own scores)."""
    run = {}
    for qid, by_stage in stages.items():
        if fusion.mode == "bm25" or "dense" not in by_stage:
            run[qid] = dict(by_stage["bm25"])
        elif fusion.mode == "dense":
            run[qid] = dict(by_stage["dense"])
        else:
            run[qid] = fuse(by_stage, fusion.method, fusion.weights)
    return run


def choose_fusion(stages, judge) -> tuple[Fusion, list[Trial]]:
    """The grid's best fusion by `judge(run) -> nDCG@10`; BM25 alone unless something strictly beats it."""
    trials, best, best_score = [], None, float("-inf")
    for fusion in fusion_grid():
        score = judge(fused_run(stages, fusion))
        trials.append(Trial({"method": fusion.method, "dense_weight": fusion.dense_weight}, score))
        if score > best_score + 1e-12:
            best, best_score = fusion, score
    return best, trials


def reranked_run(
    fused: Mapping[str, Scores], ql: Mapping[str, Scores], depth: int, weight: float
) -> dict[str, dict[str, float]]:
    """Each query's fused top `depth` re-scored at QL weight `weight`, the rest below it in fused order."""
    run = {}
    for qid, scores in fused.items():
        order = sorted(scores, key=lambda d: (-scores[d], d))
        head, tail = order[:depth], order[depth:]
        run[qid] = rerank_head(scores, {d: ql[qid][d] for d in head}, head, tail, weight) if head else {}
    return run


def choose_rerank(fused, ql, judge, depths: Sequence[int] = DEPTHS) -> tuple[int, float, list[Trial]]:
    """The best (depth, QL weight); (0, 0.0), no re-ranking, unless some setting strictly beats the fused run.
    `ql[q]` must score at least each query's top max(depths) fused documents."""
    base = judge(fused)
    trials = [Trial({"depth": 0, "ql_weight": 0.0}, base)]
    best, best_score = (0, 0.0), base
    for depth in depths:
        for weight in QL_WEIGHTS[1:]:
            score = judge(reranked_run(fused, ql, depth, weight))
            trials.append(Trial({"depth": depth, "ql_weight": weight}, score))
            if score > best_score + 1e-12:
                best, best_score = (depth, weight), score
    return best[0], best[1], trials
