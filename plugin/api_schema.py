"""The request bodies the service takes, and their limits: one definition each, shared by llmql's own routes and
the OpenAI / Cohere-shaped ones (`compat_api`). Bodies are bounded (bytes, list lengths, text lengths), strict
(no coercion: "5" is not 5) and closed (unknown fields are refused), so a client's mistake is a 4xx, never a
guess."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmql.connectors.base import check_filter
from llmql.plugin.search_settings import MAX_K

MAX_BODY_BYTES = 1 << 20
MAX_TEXT_CHARS = 20_000
MAX_ITEMS = 256


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class Strict(BaseModel):
    """Unknown fields are refused, and so is every coercion: "from": true or "5" is not the number 5."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    query: Text
    k: int = Field(10, ge=1, le=MAX_K)
    size: int | None = Field(None, ge=1, le=MAX_K)  # the same as k, for clients that page with from/size
    from_: int = Field(0, ge=0, le=10_000, alias="from")
    fields: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(None, max_length=64)
    mode: Literal["hybrid", "bm25", "dense"] | None = None  # None: the model's tuned mode (search.json), else hybrid
    rerank: bool | None = None  # None: as tuned (search.json) when the service has a QL scorer, else off
    filter: dict[str, Any] | None = None  # llmql.connectors.filters: values, ranges, "not"
    explain: bool = False
    index: str | None = Field(None, min_length=1, max_length=255)

    _blank = field_validator("query")(not_blank)

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: dict | None) -> dict | None:

        return None if value is None else check_filter(value)

    @property
    def page_size(self) -> int:
        if self.size is not None and "k" in self.model_fields_set and self.size != self.k:
            raise ValueError(f"give k or size, not both (k={self.k}, size={self.size})")
        return self.size if self.size is not None else self.k


def project(hit, fields: list[str] | None) -> dict:
    """The stored fields a hit returns: by default the title and every metadata field (not the text, which can
    be long); with `fields`, only those named ("title", "text", or metadata names)."""
    if fields is None:
        return {"title": hit.title, "fields": hit.fields}
    out = {name: getattr(hit, name) for name in ("title", "text") if name in fields}
    return {**out, "fields": {k: v for k, v in hit.fields.items() if k in fields}}


class Candidate(Strict):
    id: str = Field(min_length=1, max_length=512)
    title: str = Field("", max_length=MAX_TEXT_CHARS)
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class RerankRequest(Strict):
    query: Text
    ids: list[Annotated[str, Field(min_length=1, max_length=512)]] | None = Field(None, max_length=MAX_ITEMS)
    candidates: list[Candidate] | None = Field(None, max_length=MAX_ITEMS)
    index: str | None = Field(None, min_length=1, max_length=255)

    _blank = field_validator("query")(not_blank)


class EmbedRequest(Strict):
    texts: list[Text] = Field(min_length=1, max_length=MAX_ITEMS)
    kind: Literal["query", "passage"] = "query"

    @field_validator("texts")
    @classmethod
    def _no_blank(cls, texts: list[str]) -> list[str]:
        blank = [i for i, t in enumerate(texts) if not t.strip()]
        if blank:
            raise ValueError(f"texts {blank[:5]} are blank")
        return texts
