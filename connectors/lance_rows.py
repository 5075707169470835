"""How llmql records become LanceDB rows and back, for the embedded backend: the schema, metadata columns,
one row per document or per passage, and the SQL for a set of ids. Pure functions over dicts and Arrow types."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from llmql.connectors.base import Passage, Record
from llmql.connectors.filters import quote, tag


def _tags(fields: dict) -> list[str]:
    return [tag(k, v) for k, v in sorted(fields.items())]


def field_columns(names: list[str]) -> dict[str, tuple[str, str]]:
    """Each declared metadata field's two columns for ranges: its value as a number, and as a string (ISO
    dates compare as strings); positional names, so any field name is a safe column name."""
    return {name: (f"num_{i}", f"str_{i}") for i, name in enumerate(names)}


def _field_values(fields: dict, names: list[str]) -> dict:
    row = {}
    for name, (number, text) in field_columns(names).items():
        value = fields.get(name)
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        row[number] = float(value) if numeric else None
        row[text] = value if isinstance(value, str) else None
    return row


def ids_in(ids: Sequence[str]) -> str:
    return "id IN (" + ", ".join(quote(i) for i in ids) + ")"


def rows_of(r: Record, declared: list[str], chunked: bool) -> list[dict]:
    """A record's rows: one, or one per passage (title and text on the first only)."""
    if chunked != bool(r.passages):
        raise ValueError(
            f"document {r.id!r}: a {'chunked' if chunked else 'whole-document'} index needs "
            f"{'passages' if chunked else 'one vector'}"
        )
    common = {
        "id": r.id,
        "content_hash": r.content_hash,
        "fields": json.dumps(r.fields, sort_keys=True),
        "tags": _tags(r.fields),
        **_field_values(r.fields, declared),
    }
    whole = {"title": r.title, "text": r.text, "search_text": f"{r.title} {r.text}".strip()}
    if not chunked:
        return [{**common, **whole, "vector": _vector(r.vector), "ql_state": r.end_states}]
    empty = {"title": "", "text": "", "search_text": ""}
    return [
        {
            **common,
            **(whole if i == 0 else empty),
            "passage": i,
            "start": p.start,
            "end": p.end,
            "vector": _vector(p.vector),
            "ql_state": p.end_states,
        }
        for i, p in enumerate(r.passages)
    ]


def _vector(vector) -> list[float] | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tolist()


def records_of_passage_rows(rows: list[dict], with_vector: bool) -> dict[str, Record]:
    """A chunked table's rows -> each document (title, text and fields from its passage-0 row) with its passages
    in order."""
    out: dict[str, Record] = {}
    for r in sorted(rows, key=lambda r: (r["id"], r["passage"])):
        vector = np.asarray(r["vector"], dtype=np.float32) if with_vector else None
        passage = Passage(r["start"], r["end"], vector, r.get("ql_state"))
        if r["passage"] == 0:
            fields = json.loads(r["fields"] or "{}")
            out[r["id"]] = Record(r["id"], r["title"], r["text"], None, r["content_hash"], None, fields, (passage,))
        elif r["id"] in out:
            out[r["id"]] = replace(out[r["id"]], passages=(*out[r["id"]].passages, passage))
    return out


def table_schema(dim: int, model: str, fields: tuple[str, ...] = (), chunking: str | None = None):
    """The table's columns, and the model, dimension, metadata fields and chunking in its schema metadata."""
    import pyarrow as pa

    columns = [c for pair in field_columns(list(fields)).values() for c in pair]
    typed = [pa.field(c, pa.float64() if c.startswith("num_") else pa.string()) for c in columns]
    if chunking:
        typed += [pa.field(c, pa.int32(), nullable=False) for c in ("passage", "start", "end")]
    meta = {"llmql.model": model, "llmql.dim": str(dim), "llmql.fields": json.dumps(list(fields))}
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("title", pa.string()),
            pa.field("text", pa.string()),
            pa.field("search_text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("content_hash", pa.string()),
            pa.field("ql_state", pa.binary()),
            pa.field("fields", pa.string()),
            pa.field("tags", pa.list_(pa.string())),
            *typed,
        ],
        metadata={**meta, **({"llmql.chunking": chunking} if chunking else {})},
    )
