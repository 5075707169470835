"""`llmql serve`: an HTTP service (FastAPI) so an existing search stack can add dense and QL stages.

    POST /search  {"query", "k", "mode", "rerank", "filter", "explain", "index"}
    POST /rerank  {"query", "ids"} or {"query", "candidates": [{"id", "title", "text"}]}  (the caller's own hits)
    POST /embed   {"texts", "kind": "query" | "passage"}
    GET  /health  and the OpenAPI document at /openapi.json (docs at /docs)

Request bodies are bounded (bytes, list lengths, text lengths); bad input gets a 4xx with a message and the
service stays up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

MAX_BODY_BYTES = 1 << 20
MAX_TEXT_CHARS = 20_000
MAX_ITEMS = 256


@dataclass(frozen=True)
class ServiceConfig:
    backend: str = "embedded"
    url: str = "./llmql-index"
    index: str = "llmql"
    model: str | None = None  # export (or model) directory for query encoding
    ql_model: str | None = None  # export with --ql-scorer (or model directory) for /rerank and rerank=true
    max_k: int = 100
    rerank_depth: int = 50
    runtime: str = "auto"


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class SearchRequest(BaseModel):
    query: Text
    k: int = Field(10, ge=1, le=1000)
    mode: Literal["hybrid", "bm25", "dense"] = "hybrid"
    rerank: bool = False
    filter: dict[str, str | int | float | bool | list[str | int | float | bool]] | None = None
    explain: bool = False
    index: str | None = None

    _blank = field_validator("query")(_not_blank)


class Candidate(BaseModel):
    id: str = Field(min_length=1, max_length=512)
    title: str = Field("", max_length=MAX_TEXT_CHARS)
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class RerankRequest(BaseModel):
    query: Text
    ids: list[Annotated[str, Field(min_length=1, max_length=512)]] | None = Field(None, max_length=MAX_ITEMS)
    candidates: list[Candidate] | None = Field(None, max_length=MAX_ITEMS)
    index: str | None = None

    _blank = field_validator("query")(_not_blank)


class EmbedRequest(BaseModel):
    texts: list[Text] = Field(min_length=1, max_length=MAX_ITEMS)
    kind: Literal["query", "passage"] = "query"


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes with 413, whether it declares a Content-Length
    or streams in chunks without one. A chunked body is read here up to the limit (no more is ever buffered)
    and replayed to the app."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await self._refuse(scope, receive, send, 400, "invalid Content-Length header")
            if int(declared) > self.limit:
                return await self._refuse(scope, receive, send, 413, f"request body over {self.limit} bytes")
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._refuse(scope, receive, send, 413, f"request body over {self.limit} bytes")
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, detail: str) -> None:
        from fastapi.responses import JSONResponse

        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def create_app(config: ServiceConfig, encoder=None, ql_scorer=None, backend=None):
    """Build the app; encoder, scorer and backend are loaded from `config` unless given (tests pass them)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse

    from llmql.connectors.base import BackendError
    from llmql.connectors.registry import open_backend
    from llmql.export.runtime import load_encoder, load_ql_scorer
    from llmql.plugin.rerank import QLReranker
    from llmql.plugin.search import HybridSearcher, SearchConfig

    encoder = encoder or (load_encoder(config.model, runtime=config.runtime) if config.model else None)
    ql_scorer = ql_scorer or (load_ql_scorer(config.ql_model, runtime=config.runtime) if config.ql_model else None)
    backend = backend or open_backend(config.backend, config.url)
    app = FastAPI(
        title="llmql",
        version="0.1.0",
        description="LLM-QL dense retrieval, hybrid search and query-likelihood re-ranking.",
    )

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    def index_of(name: str | None) -> str:
        index = name or config.index
        try:
            backend.count(index)
        except BackendError as err:
            raise HTTPException(404, f"unknown index {index!r}: {err}") from None
        return index

    @app.get("/health")
    def health() -> dict:
        try:
            count = backend.count(config.index)
        except BackendError as err:
            return JSONResponse({"status": "degraded", "detail": str(err)}, status_code=503)
        return {
            "status": "ok",
            "backend": backend.name,
            "index": config.index,
            "documents": count,
            "encoder": encoder is not None,
            "ql_scorer": ql_scorer is not None,
        }

    @app.post("/search")
    def search(body: SearchRequest) -> dict:
        index = index_of(body.index)
        if body.k > config.max_k:
            raise HTTPException(400, f"k={body.k} is over this service's limit of {config.max_k}")
        if body.mode != "bm25" and encoder is None:
            raise HTTPException(400, f"mode {body.mode!r} needs an encoder; the service was started without --model")
        if body.rerank and ql_scorer is None:
            raise HTTPException(400, "rerank needs a QL scorer; the service was started without --ql-model")
        cfg = replace(SearchConfig(mode=body.mode), rerank_depth=config.rerank_depth if body.rerank else 0)
        try:
            result = HybridSearcher(backend, index, encoder, ql_scorer, cfg).search(body.query, body.k, body.filter)
        except BackendError as err:
            raise HTTPException(502, str(err)) from None
        hits = [
            {
                "id": h.id,
                "score": h.score,
                "title": h.title,
                "text": h.text,
                "fields": h.fields,
                **({"stages": h.stages} if body.explain else {}),
            }
            for h in result.hits
        ]
        return {"hits": hits, "timings_ms": result.timings_ms, **({"ql_path": result.ql_path} if body.rerank else {})}

    @app.post("/rerank")
    def rerank(body: RerankRequest) -> dict:
        if ql_scorer is None:
            raise HTTPException(400, "the service was started without a QL scorer (--ql-model)")
        if (body.ids is None) == (body.candidates is None):
            raise HTTPException(422, "give exactly one of 'ids' (documents in the index) or 'candidates' (texts)")
        if body.ids is not None:
            reranker = QLReranker(ql_scorer, backend, index_of(body.index))
            try:
                result = reranker.rerank(body.query, body.ids)
            except KeyError as err:
                raise HTTPException(404, str(err.args[0])) from None
        else:
            ids = [c.id for c in body.candidates]
            if len(set(ids)) != len(ids):
                raise HTTPException(422, "candidate ids must be unique")
            result = QLReranker(ql_scorer, path="full").rerank(
                body.query, ids, [c.text for c in body.candidates], [c.title for c in body.candidates]
            )
        ranked = sorted(result.scores.items(), key=lambda x: (-x[1], x[0]))
        return {"results": [{"id": i, "score": s} for i, s in ranked], "path": result.path, "ms": result.seconds * 1000}

    @app.post("/embed")
    def embed(body: EmbedRequest) -> dict:
        if encoder is None:
            raise HTTPException(400, "the service was started without an encoder (--model)")
        vectors = encoder.encode_queries(body.texts) if body.kind == "query" else encoder.encode_passages(body.texts)
        return {"dim": int(vectors.shape[1]), "embeddings": vectors.tolist()}

    return app
