"""The one BM25 analysis every lexical path shares: bm25s's tokenisation with English stop words and Snowball
stemming (the project's BM25 baseline), and an in-process bm25s index over texts.

Used by hard-negative mining (training), the memory engine's BM25 (connectors) and word-based QL (plugin), so a
query's terms are the same words wherever they are counted. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Analyzer:
    def __init__(self):
        import bm25s
        import Stemmer

        self._bm25s = bm25s
        self._stemmer = Stemmer.Stemmer("english")

    def words(self, text: str) -> list[str]:
        """The analysed terms of one text, in order (stop words dropped, stems kept)."""
        tokens = self._bm25s.tokenize(
            [text], stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )
        return list(tokens[0])

    def tokenize(self, texts: Sequence[str], show_progress: bool = False):
        """bm25s's tokenised form of `texts`, what `bm25s.BM25.index` and `retrieve` take."""
        return self._bm25s.tokenize(list(texts), stopwords="en", stemmer=self._stemmer, show_progress=show_progress)


class BM25:
    """bm25s over `texts` (in order) with the shared analysis."""

    def __init__(self, texts: Sequence[str], show_progress: bool = False):
        import bm25s

        self.analyzer = Analyzer()
        self.size = len(texts)
        self.index = bm25s.BM25()
        self.index.index(self.analyzer.tokenize(texts, show_progress), show_progress=show_progress)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(text indices [Q, k], scores [Q, k]), best first; k at most the number of texts."""
        tokens = self.analyzer.tokenize(queries)
        return self.index.retrieve(tokens, k=min(k, self.size), show_progress=False, n_threads=0)

    def scores(self, query: str) -> np.ndarray:
        """[N] every text's score for `query` (zeros when none of its terms is in the index)."""
        ids = self.index.get_tokens_ids(self.analyzer.words(query))
        return self.index.get_scores_from_ids(ids) if ids else np.zeros(self.size)
