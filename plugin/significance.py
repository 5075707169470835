"""Paired comparison of two runs over the same queries: mean difference and a percentile bootstrap interval.

Resampling queries (not documents) is the usual IR practice: it asks how much the mean difference would move
with another draw of queries like these. Pure numpy, seeded, so a table is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean over queries of (a - b)
    low: float  # 95% percentile-bootstrap interval
    high: float
    queries: int

    @property
    def clear(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], samples: int = 10_000, seed: int = 0, level: float = 0.95
) -> PairedDifference:
    """a[i] and b[i] are the same query's scores under two systems."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired scores need equal, non-zero lengths (got {len(a)} and {len(b)})")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDifference(float(diff.mean()), float(low), float(high), len(diff))


def versus(per_query: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]], metric: str):
    """Paired difference of two ir-measures per-query tables on `metric`, over the queries judged in either
    (a query missing from one side scores 0 there, as ir-measures counts it)."""
    queries = sorted(set(per_query) | set(baseline))
    a = [per_query.get(q, {}).get(metric, 0.0) for q in queries]
    b = [baseline.get(q, {}).get(metric, 0.0) for q in queries]
    return paired_bootstrap(a, b)
