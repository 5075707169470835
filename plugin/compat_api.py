"""The request shapes other tools already speak, on `llmql serve`: OpenAI embeddings and the rerank shape that
Cohere, Jina and other rerankers share, so an existing client (or an OpenSearch / Elasticsearch connector made
for those APIs) can call llmql unchanged.

    POST /v1/embeddings  {"input": str | [str], "model", "encoding_format": "float" | "base64", "input_type"}
    POST /v1/rerank      {"query", "documents": [str | {"text", "title"?, "id"?}], "top_n", "return_documents"}
    GET  /v1/models

`input_type` ("query", the default, or "passage") is llmql's extension: the two sides use different prompts.
A rerank scores by query likelihood: from the index's cached [E] states when every document carries an `id`
the index holds, else by the full forward pass over the given texts. `relevance_score` is the query's mean
per-token likelihood exp(log P(q|d) / |q|), in (0, 1] and in the same order as log P(q|d) (engines such as
OpenSearch take scores that are not negative).
"""

from __future__ import annotations

import base64
import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from llmql.plugin.api_schema import MAX_ITEMS, MAX_TEXT_CHARS, Strict, Text, not_blank
from llmql.plugin.rerank import QLReranker
from llmql.plugin.service_state import ServiceState

ModelName = Annotated[str, Field(min_length=1, max_length=256)]


class EmbeddingsRequest(Strict):
    input: Text | list[Text] = Field(union_mode="left_to_right")
    model: ModelName
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "passage"] = "query"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)

    @field_validator("input")
    @classmethod
    def _bounded(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > MAX_ITEMS:
            raise ValueError(f"input: 1 to {MAX_ITEMS} texts, got {len(texts)}")
        blank = [i for i, t in enumerate(texts) if not t.strip()]
        if blank:
            raise ValueError(f"input {blank[:5]} blank")
        return value


class RerankDocument(Strict):
    text: Text

    _blank = field_validator("text")(not_blank)
    title: str = Field("", max_length=MAX_TEXT_CHARS)
    id: str | None = Field(None, min_length=1, max_length=512)


class CompatRerankRequest(Strict):
    query: Text
    documents: list[Text | RerankDocument] = Field(min_length=1, max_length=MAX_ITEMS)

    @field_validator("documents")
    @classmethod
    def _no_blank(cls, documents: list) -> list:
        blank = [i for i, d in enumerate(documents) if isinstance(d, str) and not d.strip()]
        if blank:
            raise ValueError(f"documents {blank[:5]} are blank")
        return documents

    model: ModelName | None = None
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    index: str | None = Field(None, min_length=1, max_length=255)  # llmql: the served index the ids are in

    _blank = field_validator("query")(not_blank)


def add_compat_routes(app, models: ServiceState, model_name: str) -> None:
    @app.get("/v1/models")
    def list_models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "llmql"}]}

    @app.post("/v1/embeddings")
    def embeddings(body: EmbeddingsRequest) -> dict:
        return _embeddings(models, model_name, body)

    @app.post("/v1/rerank")
    def rerank(body: CompatRerankRequest) -> dict:
        return _rerank(models, model_name, body)


def _check_model(asked: str | None, served: str) -> None:
    from fastapi import HTTPException

    if asked is not None and asked != served:
        raise HTTPException(404, f"model {asked!r} is not served here; this service serves {served!r}")


def _embeddings(models: ServiceState, model_name: str, body: EmbeddingsRequest) -> dict:
    from fastapi import HTTPException

    _check_model(body.model, model_name)
    encoder = models.encoder
    if encoder is None:
        raise HTTPException(400, "the service was started without an encoder (--model)")
    if body.dimensions is not None and body.dimensions != encoder.dim:
        raise HTTPException(400, f"dimensions={body.dimensions}: this model's embeddings have {encoder.dim}")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if body.input_type == "query":
        vectors, rows = encoder.encode_queries(texts), encoder.tokenizer.queries(texts)
    else:
        vectors, rows = encoder.encode_passages(texts), encoder.tokenizer.passages([""] * len(texts), texts)
    tokens = sum(len(row) for row in rows)
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(vector, body.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    """float: a JSON list; base64: the little-endian float32 bytes, as OpenAI's clients decode them."""
    if encoding == "float":
        return vector.astype(np.float32).tolist()
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def _rerank(models: ServiceState, model_name: str, body: CompatRerankRequest) -> dict:
    from fastapi import HTTPException

    _check_model(body.model, model_name)
    if models.ql_scorer is None:
        raise HTTPException(400, "the service was started without a QL scorer (--ql-model)")
    documents = [d if isinstance(d, RerankDocument) else RerankDocument(text=d) for d in body.documents]
    keys = [f"#{i}" for i in range(len(documents))]
    ids = [d.id for d in documents]
    result = None
    if all(ids) and len(set(ids)) == len(ids):
        index = models.index_of(body.index)
        reranker = QLReranker(models.ql_scorer, models.backend, index, models.ql_paths[index])
        try:
            result = reranker.rerank(body.query, ids)
            scores = [result.scores[i] for i in ids]
        except KeyError:
            result = None  # some ids are not in the index: score the given texts instead
    if result is None:
        result = QLReranker(models.ql_scorer, path="full").rerank(
            body.query, keys, [d.text for d in documents], [d.title for d in documents]
        )
        scores = [result.scores[k] for k in keys]
    length = max(1, len(models.ql_scorer.tokenizer.ql_queries([body.query])[0]))
    order = sorted(range(len(documents)), key=lambda i: (-scores[i], i))[: body.top_n or len(documents)]
    results = [
        {
            "index": i,
            "relevance_score": math.exp(scores[i] / length),
            **({"document": {"text": documents[i].text}} if body.return_documents else {}),
        }
        for i in order
    ]
    return {"results": results, "model": model_name, "meta": {"ql_path": result.path}}
