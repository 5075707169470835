"""What the service's routes share: its configuration and its state (the engine, the models as the protocols
name them, the QL path each served index allows, the tuned settings, the model queue)."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from llmql.connectors.base import SearchBackend
from llmql.plugin.batcher import ModelBatcher
from llmql.plugin.metrics import ServiceMetrics
from llmql.plugin.search_settings import SearchConfig
from llmql.train.core.ql_base import QueryLikelihoodScorer
from llmql.train.core.text_encoder import TextEncoder


@dataclass(frozen=True)
class ServiceConfig:
    """`llmql serve`'s settings (one per option)."""

    backend: str = "embedded"
    url: str = "./llmql-index"
    index: str = "llmql"
    model: str | None = None  # export (or model) directory for query encoding
    ql_model: str | None = None  # export with --ql-scorer (or model directory) for /rerank and rerank=true
    max_k: int = 100  # at most llmql.plugin.api_schema.MAX_K
    rerank_depth: int = 50  # re-ranked by QL when a request asks for it and search.json has no depth
    runtime: str = "auto"
    device: str = "auto"  # auto, cpu, cuda, cuda:N (llmql.train.core.device.resolve_device)
    indexes: tuple[str, ...] = ()  # other indexes (or aliases) a request may name besides `index`
    batching: bool = True  # concurrent requests share model calls (llmql.plugin.batcher); off: one call each
    max_queued_tokens: int = 16384  # a shared encoding call, at most (estimated tokens)
    max_wait_ms: float = 5.0  # how long the first request of a call waits for others to join it
    max_queue: int = 32  # requests waiting for the model; one more is answered 503 with Retry-After
    model_name: str = "llmql"  # the `model` the OpenAI-style /v1 endpoints serve (another name is a 404)
    request_timeout_s: float = 30.0  # a request's headers, and then its body, must arrive within this (else 408)

    @property
    def served(self) -> tuple[str, ...]:
        return (self.index, *(i for i in self.indexes if i != self.index))


@dataclass
class ServiceState:
    """What the routes share: the engine, the models (behind the model queue when batching), per served index the
    QL path its start-up check allowed, and the tuned settings."""

    config: ServiceConfig
    backend: SearchBackend
    encoder: TextEncoder | None = None
    ql_scorer: QueryLikelihoodScorer | None = None
    ql_paths: dict[str, str] = field(default_factory=dict)
    tuned: SearchConfig = field(default_factory=SearchConfig)  # the model's search.json, or the untuned defaults
    batcher: ModelBatcher | None = None  # the queue the models run through, when batching
    metrics: ServiceMetrics | None = None  # what /metrics exposes
    health_limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))  # /health's

    def index_of(self, name: str | None) -> str:
        from fastapi import HTTPException

        index = name or self.config.index
        if index not in self.ql_paths:
            raise HTTPException(403, f"index {index!r} is not served here (served: {', '.join(self.ql_paths)})")
        return index
