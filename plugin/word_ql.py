"""Dirichlet-smoothed unigram query likelihood (Zhai & Lafferty 2001), the classic word-based QL baseline.

    log P(q | d) = sum_{w in q} c(w, q) * log( (c(w, d) + mu * P(w | C)) / (|d| + mu) )

Analysis (lower-casing, English stop words, Snowball stemming) is the BM25 baseline's (`llmql.train.core.bm25`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from llmql.train.core.bm25 import Analyzer


class DirichletQL:
    def __init__(self, texts: Iterable[tuple[str, str]], mu: float = 1000.0):
        """texts: (doc_id, text) over the whole collection, for P(w | C) and document term counts."""
        self.mu = mu
        self._analyzer = Analyzer()
        self.docs: dict[str, Counter] = {}
        collection: Counter = Counter()
        for doc_id, text in texts:
            counts = Counter(self.analyse(text))
            self.docs[doc_id] = counts
            collection.update(counts)
        self.collection_length = sum(collection.values())
        self.collection = collection

    def analyse(self, text: str) -> list[str]:
        return self._analyzer.words(text)

    def score(self, query: str, doc_ids: Sequence[str]) -> dict[str, float]:
        terms = Counter(t for t in self.analyse(query) if self.collection.get(t))  # unseen terms: same for all docs
        out = {}
        for doc_id in doc_ids:
            counts = self.docs[doc_id]
            length = sum(counts.values())
            total = 0.0
            for term, qtf in terms.items():
                p_collection = self.collection[term] / self.collection_length
                total += qtf * math.log((counts.get(term, 0) + self.mu * p_collection) / (length + self.mu))
            out[doc_id] = total
        return out
