"""BM25 hard-negative mining with bm25s, written out as Tevatron-style JSONL so a run can be repeated."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from llmql.train.core.bm25 import BM25
from llmql.train.data import Doc, TrainGroup


class BM25Index:
    """bm25s over a corpus's documents (title and text) with the shared analysis (`llmql.train.core.bm25`)."""

    def __init__(self, docs: list[Doc], show_progress: bool = False):
        self.docs = docs
        self.bm25 = BM25([f"{d.title} {d.text}" for d in docs], show_progress)

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (doc indices [Q, k], scores [Q, k]) best first."""
        return self.bm25.search(queries, k)


def mine_negatives(
    groups: list[TrainGroup],
    corpus: dict[str, Doc],
    per_query: int = 15,
    depth: int = 100,
    skip_top: int = 0,
    seed: int = 0,
    index: BM25Index | None = None,
) -> list[TrainGroup]:
    """Sample `per_query` negatives from BM25's top `depth` (after skipping `skip_top`), excluding positives.

    Sampling from the top-`depth` rather than taking the very top follows the RepLLaMA/Tevatron recipe and
    lowers the risk of unlabelled positives.
    """
    docs = list(corpus.values())
    index = index or BM25Index(docs)
    rng = np.random.default_rng(seed)
    top, _ = index.search([g.query for g in groups], k=depth)
    out = []
    for g, row in zip(groups, top, strict=True):
        positive_ids = {d.id for d in g.positives}
        pool = [index.docs[i] for i in row[skip_top:] if index.docs[i].id not in positive_ids]
        take = min(per_query, len(pool))
        chosen = [pool[i] for i in sorted(rng.choice(len(pool), size=take, replace=False))] if take else []
        out.append(replace(g, negatives=tuple(chosen)))
    return out
