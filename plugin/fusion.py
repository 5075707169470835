"""Client-side score fusion, as small pure functions (works on every backend and licence).

Inputs are per-stage score maps {doc_id: score}; outputs a fused map. Documents missing from a stage's list
get that stage's worst normalised value (0 for min-max, the lowest z for z-score, nothing for RRF).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Scores = Mapping[str, float]


def min_max(scores: Scores) -> dict[str, float]:
    """Scale to [0, 1]. A single result, or all-equal scores, map to 1.0: each is the best of its list."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return dict.fromkeys(scores, 1.0)
    return {d: (s - lo) / (hi - lo) for d, s in scores.items()}


def z_score(scores: Scores) -> dict[str, float]:
    """Standardise to mean 0, unit variance; zero variance maps every score to 0."""
    if not scores:
        return {}
    values = list(scores.values())
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if std == 0:
        return dict.fromkeys(scores, 0.0)
    return {d: (s - mean) / std for d, s in scores.items()}


def rrf(scores: Scores, k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion term 1 / (k + rank), rank 1 = best score (ties broken by id, for determinism)."""
    order = sorted(scores, key=lambda d: (-scores[d], d))
    return {d: 1.0 / (k + rank) for rank, d in enumerate(order, start=1)}


def fuse(
    stages: Mapping[str, Scores], method: str = "rrf", weights: Mapping[str, float] | None = None, rrf_k: int = 60
) -> dict[str, float]:
    """Weighted sum of per-stage normalised scores over the union of documents."""
    weights = weights or {}
    normalise = {"minmax": min_max, "zscore": z_score, "rrf": lambda s: rrf(s, rrf_k)}[method]
    fused: dict[str, float] = {}
    normalised = {name: normalise(s) for name, s in stages.items()}
    docs = {d for s in stages.values() for d in s}
    for name, values in normalised.items():
        w = weights.get(name, 1.0)
        floor = 0.0 if method in ("minmax", "rrf") or not values else min(values.values())
        for d in docs:
            fused[d] = fused.get(d, 0.0) + w * values.get(d, floor)
    return fused


def interpolate(first: Scores, second: Scores, alpha: float) -> dict[str, float]:
    """(1 - alpha) * minmax(first) + alpha * minmax(second) over `first`'s documents; alpha = 1 uses `second`."""
    a, b = min_max(first), min_max(second)
    return {d: (1 - alpha) * a[d] + alpha * b.get(d, 0.0) for d in first}


def rerank_head(fused: Scores, ql: Scores, head: list[str], tail: list[str], alpha: float) -> dict[str, float]:
    """Scores after QL re-ranking of the head: interpolated for `head`, then `tail` in its given order scored
    strictly below the head (min(head) - 1, - 2, ...), so sorting by score gives the ranked list as served.

    A run file scored this way evaluates the order the searcher returns (the head's interpolated values and the
    tail's fused values live on different scales and must not be compared).
    """
    scores = interpolate({d: fused[d] for d in head}, ql, alpha)
    floor = min(scores.values(), default=0.0)
    scores.update({d: floor - 1.0 - i for i, d in enumerate(tail)})
    return scores
