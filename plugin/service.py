"""`llmql serve`: an HTTP service (FastAPI) so an existing search stack can add dense and QL stages.

    POST /search  {"query", "k" (or "size"), "from", "fields", "mode", "rerank", "filter", "explain", "index"}
    POST /rerank  {"query", "ids"} or {"query", "candidates": [{"id", "title", "text"}]}  (the caller's own hits)
    POST /embed   {"texts", "kind": "query" | "passage"}
    GET  /health  liveness; GET /ready: 200 only when the models are loaded and every served index answers
    GET  /metrics Prometheus' text format (plugin/metrics.py); the OpenAPI document at /openapi.json (docs at /docs)
    POST /v1/embeddings, /v1/rerank, GET /v1/models: the OpenAI and Cohere-style shapes (plugin/compat_api.py)

Request bodies are bounded (bytes, list lengths, text lengths) and unknown fields are refused (a client's typo
must not be ignored silently); bad input gets a 4xx with a message and the service stays up. A request may name
only the indexes the service was started with, each checked against the models at start-up. A search engine
that cannot be reached is a 503, an unknown index a 404.
"""

from __future__ import annotations

from dataclasses import replace

from llmql.connectors.base import BackendError
from llmql.connectors.registry import open_backend
from llmql.export.runtime import load_encoder, load_ql_scorer
from llmql.plugin.api_schema import MAX_BODY_BYTES, EmbedRequest, RerankRequest, SearchRequest, project
from llmql.plugin.batcher import ModelBatcher, QueuedEncoder, QueuedQLScorer
from llmql.plugin.compat_api import add_compat_routes
from llmql.plugin.http_errors import add_error_handlers
from llmql.plugin.index_check import check_models
from llmql.plugin.metrics import ServiceMetrics
from llmql.plugin.middleware import BodyLimit, RequestContext
from llmql.plugin.rerank import QLReranker
from llmql.plugin.search import HybridSearcher, default_config
from llmql.plugin.service_state import ServiceConfig, ServiceState
from llmql.train.core.device import resolve_device

__all__ = ["MAX_BODY_BYTES", "ServiceConfig", "create_app"]


def create_app(config: ServiceConfig, encoder=None, ql_scorer=None, backend=None):
    """Build the app; encoder, scorer and backend are loaded from `config` unless given (tests pass them).

    Every served index is checked against the models before the app exists: a model the index was not synced
    with is refused here (IndexMismatch), not answered with meaningless hits or 500s later."""
    from fastapi import FastAPI

    device = resolve_device(config.device)
    backend = backend or open_backend(config.backend, config.url, create=False)  # before loading models
    if encoder is None and config.model:
        encoder = load_encoder(config.model, runtime=config.runtime, device=device)
    if ql_scorer is None and config.ql_model:
        ql_scorer = load_ql_scorer(config.ql_model, runtime=config.runtime, device=device)
    paths = {index: check_models(backend, index, encoder, ql_scorer) for index in config.served}
    tuned = default_config(encoder, ql_scorer)
    metrics = _metrics(config, backend, encoder, ql_scorer)
    batcher = None
    if config.batching and (encoder is not None or ql_scorer is not None):
        batcher, encoder, ql_scorer = _queued(config, encoder, ql_scorer, metrics)
    metrics.queue_depth.set_function(lambda: batcher.waiting if batcher is not None else 0)
    models = ServiceState(config, backend, encoder, ql_scorer, paths, tuned, batcher, metrics=metrics)
    app = FastAPI(
        title="llmql",
        version="0.1.0",
        description="LLM-QL dense retrieval, hybrid search and query-likelihood re-ranking.",
        lifespan=_lifespan_for(config),
    )
    app.state.batcher, app.state.metrics = batcher, metrics
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, deadline_s=config.request_timeout_s)
    app.add_middleware(RequestContext, metrics=metrics)  # added last, so outermost: every answer is counted
    add_error_handlers(app)
    _add_routes(app, models)

    add_compat_routes(app, models, config.model_name)
    return app


def _add_routes(app, models: ServiceState) -> None:
    @app.get("/health")
    async def health():
        # on the event loop with a thread of its own for the engine call: never behind requests that wait for
        # the model, however many there are
        import anyio.to_thread

        return await anyio.to_thread.run_sync(_health, models, limiter=models.health_limiter)

    @app.get("/ready")
    async def ready():
        import anyio.to_thread

        return await anyio.to_thread.run_sync(_ready, models, limiter=models.health_limiter)

    @app.get("/metrics", include_in_schema=False)
    def metrics():
        from fastapi.responses import Response

        body, content_type = models.metrics.exposition()
        return Response(body, media_type=content_type)

    @app.post("/search")
    def search(body: SearchRequest) -> dict:
        return _search(models, body)

    @app.post("/rerank")
    def rerank(body: RerankRequest) -> dict:
        return _rerank(models, body)

    @app.post("/embed")
    async def embed(body: EmbedRequest) -> dict:
        if models.batcher is None:  # unbatched: the model call runs in a worker thread
            import anyio.to_thread

            return await anyio.to_thread.run_sync(_embed, models, body)
        if models.encoder is None:
            return _embed(models, body)  # answers that there is no encoder
        vectors = await models.batcher.encode_async(body.texts, body.kind)
        return {"dim": int(vectors.shape[1]), "embeddings": vectors.tolist()}


def _metrics(config: ServiceConfig, backend, encoder, ql_scorer) -> ServiceMetrics:
    metrics = ServiceMetrics()
    metrics.info.info(
        {
            "encoder": encoder.identity if encoder is not None else "",
            "ql_model": ql_scorer.identity if ql_scorer is not None else "",
            "backend": backend.name,
        }
    )
    metrics.watch_index(backend.count, config.served)
    return metrics


def _ready(models: ServiceState):
    """Readiness: the models loaded at start-up (the app exists only then) and every served index answers."""
    from fastapi.responses import JSONResponse

    counts = {}
    for index in models.ql_paths:
        try:
            counts[index] = models.backend.count(index)
        except Exception as err:  # whatever the engine raises, the answer is the same: not ready
            return JSONResponse({"status": "not ready", "detail": f"index {index!r}: {err}"}, status_code=503)
    return {"status": "ready", "documents": counts}


def _queued(config: ServiceConfig, encoder, ql_scorer, metrics: ServiceMetrics):

    batcher = ModelBatcher(
        encoder, config.max_queued_tokens, config.max_wait_ms, config.max_queue, observe=metrics.observe_model_call
    )
    return (
        batcher,
        QueuedEncoder(encoder, batcher) if encoder is not None else None,
        QueuedQLScorer(ql_scorer, batcher) if ql_scorer is not None else None,
    )


def _lifespan_for(config: ServiceConfig):
    """At start-up: request threads enough that requests waiting for the model (at most `max_queue`) never leave a
    BM25 or health request without one; and the start-up's objects (torch, the model, the engine's client) frozen out of
    the garbage collector: under load its full collections walked them all, about 300 ms each every few seconds
    with every thread stopped (bench.serve_load --soak; BENCHMARKS.md)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        import gc

        import anyio.to_thread

        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, config.max_queue + 16)
        gc.collect()
        gc.freeze()
        yield

    return lifespan


def _health(models: ServiceState):
    from fastapi.responses import JSONResponse

    try:
        count = models.backend.count(models.config.index)
    except BackendError as err:
        return JSONResponse({"status": "degraded", "detail": str(err)}, status_code=503)
    return {
        "status": "ok",
        "backend": models.backend.name,
        "index": models.config.index,
        "indexes": list(models.ql_paths),
        "documents": count,
        "encoder": models.encoder is not None,
        "ql_scorer": models.ql_scorer is not None,
        **({"model_queue": models.batcher.snapshot()} if models.batcher is not None else {}),
    }


def _search(models: ServiceState, body: SearchRequest) -> dict:
    from fastapi import HTTPException

    index, config, tuned = models.index_of(body.index), models.config, models.tuned
    if body.fields:
        _check_fields(models, index, body.fields)
    mode = body.mode or tuned.mode
    rerank = body.rerank if body.rerank is not None else tuned.rerank_depth > 0
    size = body.page_size
    if size > config.max_k:
        raise HTTPException(400, f"k={size} is over this service's limit of {config.max_k}")
    if mode != "bm25" and models.encoder is None:
        raise HTTPException(400, f"mode {mode!r} needs an encoder; the service was started without --model")
    if rerank and models.ql_scorer is None:
        raise HTTPException(400, "rerank needs a QL scorer; the service was started without --ql-model")
    depth = (tuned.rerank_depth or config.rerank_depth) if rerank else 0
    cfg = replace(tuned, mode=mode, rerank_depth=depth, ql_path=models.ql_paths[index])
    searcher = HybridSearcher(models.backend, index, models.encoder, models.ql_scorer, cfg, verify=False)
    result = searcher.search(body.query, size, body.filter, offset=body.from_)
    models.metrics.observe_stages(result.timings_ms)
    hits = [
        {
            "id": h.id,
            "score": h.score,
            **project(h, body.fields),
            **({"passage": {"start": h.passage[0], "end": h.passage[1]}} if h.passage else {}),
            **({"stages": h.stages} if body.explain else {}),
        }
        for h in result.hits
    ]
    return {"hits": hits, "timings_ms": result.timings_ms, **({"ql_path": result.ql_path} if rerank else {})}


def _check_fields(models: ServiceState, index: str, fields: list[str]) -> None:
    """`fields` a hit can return: title, text, and the metadata the index holds (where it can say which)."""
    from fastapi import HTTPException

    held = models.backend.index_info(index).fields
    if held is None:
        return
    unknown = sorted(set(fields) - {"title", "text", *held})
    if unknown:
        raise HTTPException(
            422,
            f"fields {unknown} are not stored in index {index!r} (it has: title, text"
            + "".join(f", {f}" for f in held)
            + ")",
        )


def _rerank(models: ServiceState, body: RerankRequest) -> dict:
    from fastapi import HTTPException

    if models.ql_scorer is None:
        raise HTTPException(400, "the service was started without a QL scorer (--ql-model)")
    if (body.ids is None) == (body.candidates is None):
        raise HTTPException(422, "give exactly one of 'ids' (documents in the index) or 'candidates' (texts)")
    if body.ids is not None:
        index = models.index_of(body.index)
        reranker = QLReranker(models.ql_scorer, models.backend, index, models.ql_paths[index])
        try:
            result = reranker.rerank(body.query, body.ids)
        except KeyError as err:
            raise HTTPException(404, str(err.args[0])) from None
    else:
        ids = [c.id for c in body.candidates]
        if len(set(ids)) != len(ids):
            raise HTTPException(422, "candidate ids must be unique")
        result = QLReranker(models.ql_scorer, path="full").rerank(
            body.query, ids, [c.text for c in body.candidates], [c.title for c in body.candidates]
        )
    models.metrics.observe_stages({"ql_rerank": result.seconds * 1000})
    ranked = sorted(result.scores.items(), key=lambda x: (-x[1], x[0]))
    return {"results": [{"id": i, "score": s} for i, s in ranked], "path": result.path, "ms": result.seconds * 1000}


def _embed(models: ServiceState, body: EmbedRequest) -> dict:
    from fastapi import HTTPException

    encoder = models.encoder
    if encoder is None:
        raise HTTPException(400, "the service was started without an encoder (--model)")
    vectors = encoder.encode_queries(body.texts) if body.kind == "query" else encoder.encode_passages(body.texts)
    return {"dim": int(vectors.shape[1]), "embeddings": vectors.tolist()}
