"""One model queue per device for the service: concurrent requests share model calls, one call runs at a time.

Each request's texts go into a bounded queue with a future; a single worker thread takes the oldest job and,
for encoding, every queued job of the same kind that fits a token budget (waiting up to `max_wait_ms` for more
to arrive when the batch is not full and other requests are queued; a request alone runs at once: load forms
batches by itself, as jobs queue while the model is busy), runs one model call, and hands each job its rows.
QL jobs (one query against its candidates) run one at a time through the same worker. A full queue raises
`Overloaded` at once, which the service answers with 503 and Retry-After, so load never grows memory without
bound. Requests that need no model (BM25, health) never touch the queue. The shape follows Infinity's batch
handler; the policy (token budget, bounded queue) text-embeddings-inference's router.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from llmql.train.core.end_states import EndStates
from llmql.train.core.errors import LLMQLError
from llmql.train.core.ql_base import QueryLikelihoodScorer
from llmql.train.core.text_encoder import TextEncoder


class Overloaded(LLMQLError):
    """The model queue is full: the caller should retry later (HTTP 503)."""


@dataclass
class _Job:
    kind: str  # "query" or "passage" (encode), or "call" (anything else, run alone)
    texts: list[str] = field(default_factory=list)
    call: Callable[[], object] | None = None
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.monotonic)  # when it joined the queue

    @property
    def tokens(self) -> int:
        """A cheap estimate (characters / 4 plus the prompt), good enough to size a shared call."""
        return sum(len(t) // 4 + 16 for t in self.texts)


@dataclass
class BatcherStats:
    jobs: int = 0
    model_calls: int = 0
    rejected: int = 0


class ModelBatcher:
    def __init__(
        self,
        encoder: TextEncoder,
        max_queued_tokens: int = 16384,
        max_wait_ms: float = 5.0,
        max_queue: int = 64,
        observe: Callable[[int, int, list[float]], None] | None = None,
    ):
        """`observe(rows, tokens, waits)`: told of each model call (its texts, estimated tokens and how long each
        of its requests waited), for the service's metrics."""
        self.encoder = encoder
        self.observe = observe
        self.max_queued_tokens, self.max_wait, self.max_queue = max_queued_tokens, max_wait_ms / 1000, max_queue
        self.stats = BatcherStats()
        self._jobs: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="llmql-model", daemon=True)
        self._thread.start()

    # -- what callers use ---------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """[N, H] embeddings of `texts` as queries or passages, computed in a call shared with other requests."""
        return self._submit(_Job(kind, list(texts))).result()

    async def encode_async(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """`encode` for an async route: the request waits on the event loop, holding no worker thread (thousands
        of waiting requests then leave the thread pool to /health and BM25 searches)."""
        import asyncio

        return await asyncio.wrap_future(self._submit(_Job(kind, list(texts))))

    def run(self, call: Callable[[], object]) -> object:
        """Run `call` (a QL scoring, say) on the model worker: one model call per device at a time."""
        return self._submit(_Job("call", call=call)).result()

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def snapshot(self) -> dict:
        """For /health: requests waiting now, and the counts so far."""
        return {"waiting": len(self._jobs), "limit": self.max_queue, **self.stats.__dict__}

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._thread.join(timeout=5)

    # -- the worker ---------------------------------------------------------------------------------------------
    def _submit(self, job: _Job) -> Future:
        with self._ready:
            if len(self._jobs) >= self.max_queue:
                self.stats.rejected += 1
                raise Overloaded(f"the model queue is full ({self.max_queue} requests waiting); retry shortly")
            self._jobs.append(job)
            self.stats.jobs += 1
            self._ready.notify()
        return job.future

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self.stats.model_calls += 1
            try:
                self._run(batch)
            except BaseException as err:  # every waiting request gets the error, the worker lives on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)

    def _next_batch(self) -> list[_Job] | None:
        with self._ready:
            while not self._jobs and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            first = self._jobs.popleft()
            if first.kind == "call":
                return [first]
            batch, deadline = [first], time.monotonic() + self.max_wait
            while True:
                budget = self.max_queued_tokens - sum(j.tokens for j in batch)
                batch += self._take_same_kind(first.kind, budget)
                left = deadline - time.monotonic()
                alone = len(batch) == 1 and not self._jobs  # nobody else is asking: no window to pay
                if alone or left <= 0 or sum(j.tokens for j in batch) >= self.max_queued_tokens:
                    return batch
                self._ready.wait(timeout=left)

    def _take_same_kind(self, kind: str, budget: int) -> list[_Job]:
        taken = []
        for job in list(self._jobs):
            if job.kind == kind and job.tokens <= budget:
                self._jobs.remove(job)
                taken.append(job)
                budget -= job.tokens
        return taken

    def _run(self, batch: list[_Job]) -> None:
        if self.observe is not None:
            now = time.monotonic()
            rows = sum(len(job.texts) for job in batch) or len(batch)
            self.observe(rows, sum(job.tokens for job in batch), [now - job.queued for job in batch])
        if batch[0].kind == "call":
            batch[0].future.set_result(batch[0].call())
            return
        texts = [t for job in batch for t in job.texts]
        encode = self.encoder.encode_queries if batch[0].kind == "query" else self.encoder.encode_passages
        vectors = encode(texts)
        start = 0
        for job in batch:
            job.future.set_result(vectors[start : start + len(job.texts)])
            start += len(job.texts)


class QueuedEncoder:
    """An encoder whose calls go through a `ModelBatcher` (what `HybridSearcher` and /embed are given); everything
    else it is asked (identity, directory, dim, tokenizer, config) is the wrapped encoder's own."""

    def __init__(self, encoder: TextEncoder, batcher: ModelBatcher):
        self.inner, self.batcher = encoder, batcher

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def encode_queries(self, texts: Sequence[str], **_ignored) -> np.ndarray:
        return self.batcher.encode(texts, "query")

    def encode_passages(self, texts: Sequence[str], titles: Sequence[str] | None = None, **_ignored) -> np.ndarray:
        if titles is not None and any(titles):
            return self.batcher.run(lambda: self.inner.encode_passages(texts, titles))
        return self.batcher.encode(texts, "passage")


class QueuedQLScorer:
    """A QL scorer whose calls run on the batcher's worker, one at a time with the encoder's; its other
    attributes (identity, tokenizer) are the wrapped scorer's own."""

    def __init__(self, scorer: QueryLikelihoodScorer, batcher: ModelBatcher):
        self.inner, self.batcher = scorer, batcher

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def score_states(self, query: str, states: EndStates, batch_size: int | None = None) -> np.ndarray:
        return self.batcher.run(lambda: self.inner.score_states(query, states, batch_size))

    def score(self, query: str, passages: Sequence[str], titles: Sequence[str] | None = None) -> np.ndarray:
        return self.batcher.run(lambda: self.inner.score(query, passages, titles))

    def end_states(self, passages: Sequence[str], titles: Sequence[str] | None = None, **kwargs) -> EndStates:
        return self.batcher.run(lambda: self.inner.end_states(passages, titles, **kwargs))
