"""What every QL scorer shares, whatever runs the model: prompts, length-sorted batches, output order.

Torch-free; `llmql.train.ql_scorer.QLScorer` (PyTorch, any device) and `llmql.export.runtime.OnnxQLScorer` only
say how one padded batch of passages becomes [E] states, and how one query scores a batch of states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from llmql.train.core.batching import length_batches, pad, run_batches
from llmql.train.core.config import ModelConfig
from llmql.train.core.end_states import EndStates
from llmql.train.core.tokenization import PromptTokenizer

LOGITS_AT_ONCE = 1 << 26  # vocabulary logits one query call may compute (256 MB in fp32)


def candidates_per_call(query_tokens: int, vocab_size: int, cap: int | None = None) -> int:
    """Candidates one QL query call scores: its [candidates * query_tokens, vocab] logits stay within
    LOGITS_AT_ONCE, and at most `cap` (None: no cap); at least one. The bound lives here, in the caller, because
    the exported query graph must not chunk by a size it was traced with."""
    bound = max(1, LOGITS_AT_ONCE // max(1, query_tokens * vocab_size))
    return bound if cap is None else max(1, min(cap, bound))


@runtime_checkable
class QueryLikelihoodScorer(Protocol):
    """What search, re-ranking, the model queue and the service need of a QL scorer, whatever runs it."""

    identity: str  # the model the scores come from (an index's cached [E] states must match it)
    tokenizer: PromptTokenizer

    def score_states(self, query: str, states: EndStates, batch_size: int | None = None) -> np.ndarray: ...

    def score(self, query: str, passages: Sequence[str], titles: Sequence[str] | None = None) -> np.ndarray: ...

    def end_states(
        self, passages: Sequence[str], titles: Sequence[str] | None = None, batch_size: int = 16
    ) -> EndStates: ...


class QLScorerBase:
    tokenizer: PromptTokenizer
    identity: str = ""  # the model the scores come from (an index's cached [E] states must match it)

    @property
    def vocab_size(self) -> int:
        """The LM head's width, which sizes a query call's logits; the tokenizer's count unless a runtime knows
        the head's."""
        return self.tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)

    def _document_states(self, ids: np.ndarray, mask: np.ndarray) -> EndStates:
        """input_ids, attention_mask [B, L] int64 (right-padded, each row ending in [E]) -> B documents' states."""
        raise NotImplementedError

    def _query_logprobs(self, query: np.ndarray, states: EndStates) -> np.ndarray:
        """query [B, Lq] int64 (the same row B times), states of B documents -> [B, Lq] token log-probabilities."""
        raise NotImplementedError

    def _inputs(self, ids: np.ndarray, mask: np.ndarray):
        """Padded numpy batch -> what `_launch_states` takes; runs on the prefetch thread."""
        return ids, mask

    def _launch_states(self, inputs) -> Callable[[], EndStates]:
        """Start `_document_states` on one prepared batch; the call returned gives its states (see
        `TextEncoderBase._launch`)."""
        result = self._document_states(*inputs)
        return lambda: result

    @property
    def config(self) -> ModelConfig:
        return self.tokenizer.config

    def end_states(
        self,
        passages: Sequence[str],
        titles: Sequence[str] | None = None,
        batch_size: int = 16,
        max_padded_tokens: int | None = None,
    ) -> EndStates:
        """Per-passage [E] states (numpy, input order): what the QL cache stores. Batches as the encoders'."""
        titles = titles if titles is not None else [""] * len(passages)
        return self.states_of_rows(self.tokenizer.passages(titles, passages), batch_size, max_padded_tokens)

    def states_of_rows(
        self, rows: list[list[int]], batch_size: int = 16, max_padded_tokens: int | None = None
    ) -> EndStates:
        """`end_states` of passages already tokenised (`PromptTokenizer.passages`)."""
        if not rows:
            raise ValueError("no passages")
        parts, order = [], []
        batches = length_batches([len(r) for r in rows], batch_size, max_padded_tokens)

        def prepare(index: list[int]):
            return self._inputs(*pad([rows[i] for i in index], self.config.pad_token_id))

        for index, states in run_batches(batches, prepare, self._launch_states):
            parts.append(states)
            order.extend(index)
        return EndStates.concat(parts).take(np.argsort(np.asarray(order)))

    def score_states(self, query: str, states: EndStates, batch_size: int | None = None) -> np.ndarray:
        """[N] log P(q | d) for the documents whose [E] states are given; only the query tokens are run, over
        `batch_size` documents a call (None: the runtime's choice; the PyTorch scorer takes all it can at once)."""
        if not query.strip():
            raise ValueError("empty query")
        q = np.asarray(self.tokenizer.ql_queries([query])[0], dtype=np.int64)
        if len(q) < 2:
            raise ValueError(f"the query {query!r} has no tokens")
        return self._score_query(q, states, batch_size)

    def _score_query(self, q: np.ndarray, states: EndStates, batch_size: int | None) -> np.ndarray:
        """The query's token ids `q` [Lq] against every document's states -> [N] float64 summed log-probabilities."""
        batch_size = candidates_per_call(len(q), self.vocab_size, batch_size or 64)
        out = np.zeros(len(states), dtype=np.float64)
        for start in range(0, len(states), batch_size):
            part = states.take(slice(start, start + batch_size))
            ids = np.broadcast_to(q, (len(part), len(q))).copy()
            out[start : start + len(part)] = self._query_logprobs(ids, part).astype(np.float64).sum(axis=1)
        return out

    def score(self, query: str, passages: Sequence[str], titles: Sequence[str] | None = None) -> np.ndarray:
        """The slow path: compute the documents' states now, then score."""
        return self.score_states(query, self.end_states(passages, titles))
