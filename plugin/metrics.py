"""The service's Prometheus metrics (prometheus-client), named as Prometheus' guide says: base units, `_seconds`,
`_total`, few labels. One registry per app, so several apps in one process (tests) never share counts.

    llmql_requests_total{route, status}           answers, by route template and HTTP status (503s, 408s among them)
    llmql_request_duration_seconds{route}         latency, from the first byte read to the last written
    llmql_stage_duration_seconds{stage}           bm25, encode, knn, fusion, ql_rerank (`SearchResult.timings_ms`)
    llmql_model_queue_depth                       requests waiting for the model now
    llmql_model_queue_wait_seconds                how long a request waited before its model call began
    llmql_model_batch_rows / _tokens              rows (texts) and estimated tokens of each shared model call
    llmql_request_timeouts_total{phase}           408s: headers (before any route) or body
    llmql_model_info{encoder, ql_model, backend}  what is loaded
    llmql_index_documents{index}                  documents in each served index, read at scrape time
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes, in every client version
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536)


class IndexDocuments:
    """A collector that asks the engine for each served index's count when Prometheus scrapes (an engine that
    cannot answer leaves the series out: its absence, and /ready, say so)."""

    def __init__(self, count: Callable[[str], int], indexes: Iterable[str]):
        self.count, self.indexes = count, list(indexes)

    def collect(self):
        family = GaugeMetricFamily("llmql_index_documents", "Documents in each served index.", labels=["index"])
        for index in self.indexes:
            try:
                family.add_metric([index], self.count(index))
            except Exception:  # an unreachable engine: no sample rather than a failed scrape
                continue
        yield family


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmql_requests", "HTTP answers.", ["route", "status"], registry=r)
        self.duration = Histogram(
            "llmql_request_duration_seconds", "Request latency.", ["route"], buckets=LATENCY, registry=r
        )
        self.stages = Histogram(
            "llmql_stage_duration_seconds", "Latency of each search stage.", ["stage"], buckets=LATENCY, registry=r
        )
        self.queue_depth = Gauge("llmql_model_queue_depth", "Requests waiting for the model.", registry=r)
        self.queue_wait = Histogram(
            "llmql_model_queue_wait_seconds", "Wait before a request's model call.", buckets=LATENCY, registry=r
        )
        self.batch_rows = Histogram("llmql_model_batch_rows", "Texts a model call.", buckets=ROWS, registry=r)
        self.batch_tokens = Histogram(
            "llmql_model_batch_tokens", "Estimated tokens a model call.", buckets=TOKENS, registry=r
        )
        self.timeouts = Counter("llmql_request_timeouts", "408 answers.", ["phase"], registry=r)
        self.info = Info("llmql_model", "The loaded models and engine.", registry=r)

    def watch_index(self, count: Callable[[str], int], indexes: Iterable[str]) -> None:
        self.registry.register(IndexDocuments(count, indexes))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.duration.labels(route).observe(seconds)
        if status == 408:
            self.timeouts.labels("body").inc()

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            if stage != "total":
                self.stages.labels(stage).observe(ms / 1000)

    def observe_model_call(self, rows: int, tokens: int, waits: list[float]) -> None:
        """One shared model call (`ModelBatcher`): its size, and how long each of its requests waited."""
        self.batch_rows.observe(rows)
        self.batch_tokens.observe(tokens)
        for wait in waits:
            self.queue_wait.observe(wait)

    def exposition(self) -> tuple[bytes, str]:
        """The text format 0.0.4, which every Prometheus since 2.0 scrapes (the client's newest, 1.0.0, needs a
        recent server to be taken as text)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry), TEXT_FORMAT
