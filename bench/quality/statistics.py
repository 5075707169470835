"""Paired comparisons of per-query scores and the spread over seeds: the numbers every table reads from."""

from __future__ import annotations

import numpy as np


def paired(a: dict[str, float], b: dict[str, float], resamples: int = 10_000, seed: int = 0) -> dict:
    """a - b over the queries both have: mean difference and percentile bootstrap 95% interval of that mean
    (llmql's own `paired_bootstrap`, queries resampled, seeded), and the two-sided paired t-test's p."""
    from scipy import stats

    from llmql.plugin.significance import paired_bootstrap

    queries = sorted(set(a) & set(b))
    if len(queries) < 2:
        raise ValueError(f"a paired comparison needs at least 2 shared queries, not {len(queries)}")
    first, second = [a[q] for q in queries], [b[q] for q in queries]
    boot = paired_bootstrap(first, second, samples=resamples, seed=seed)
    p = stats.ttest_rel(first, second).pvalue
    return {
        "mean_difference": boot.mean,
        "ci95": [boot.low, boot.high],
        "t_test_p": float(p) if np.isfinite(p) else 1.0,  # identical scores: no evidence of a difference
        "queries": len(queries),
    }


def seed_mean(by_seed: dict[int, dict[str, float]], seeds: list[int]) -> dict[str, float]:
    """Per-query scores averaged over the given seeds of one arm."""
    queries = by_seed[seeds[0]]
    return {q: sum(by_seed[s][q] for s in seeds) / len(seeds) for q in queries}


def seed_spread(values: list[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation) over seeds; one seed has no spread (None, never a misleading 0)."""
    if not values:
        raise ValueError("no seeds")
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)
