"""The metadata filter language, checked once and turned into each engine's own form by pure functions, so that
a filter means the same documents on every backend.

    {"lang": "en"}                              exact value
    {"year": [2020, 2021]}                      any of these values
    {"year": {"gte": 2020, "lt": 2023}}         a range: numbers, or ISO dates ("2021-05-01", "2021-05-01T12:00")
    {"lang": "en", "not": {"year": [1999]}}     fields are AND'ed; "not" excludes what its filter matches

Bounded: at most MAX_CLAUSES fields and MAX_VALUES values in all, one level of "not".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FieldValue = str | int | float | bool
Filter = dict[str, Any]  # as a user writes it (parsed JSON); `parse_filter` checks it

MAX_CLAUSES = 32
MAX_VALUES = 256
RANGE_KEYS = ("gte", "gt", "lte", "lt")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?")


@dataclass(frozen=True)
class Clause:
    """One field's condition: `values` (any of them) or a range (`bounds`: operator -> number or ISO date)."""

    field: str
    values: tuple[FieldValue, ...] = ()
    bounds: tuple[tuple[str, float | int | str], ...] = ()
    negate: bool = False


def parse_filter(value: object) -> list[Clause]:
    """A filter as written (parsed JSON) -> its clauses, or ValueError saying what is wrong with it."""
    if value is None:
        return []
    clauses = _clauses(value, negate=False)
    if len(clauses) > MAX_CLAUSES:
        raise ValueError(f"a filter has at most {MAX_CLAUSES} fields, this one {len(clauses)}")
    values = sum(max(1, len(c.values)) for c in clauses)
    if values > MAX_VALUES:
        raise ValueError(f"a filter has at most {MAX_VALUES} values in all, this one {values}")
    return clauses


def _clauses(value: object, negate: bool) -> list[Clause]:
    if not isinstance(value, dict):
        raise ValueError(f'a filter is a JSON object such as {{"lang": "en"}}, not {type(value).__name__} {value!r}')
    out: list[Clause] = []
    for key, item in value.items():
        if key == "not":
            if negate:
                raise ValueError('"not" cannot be nested inside "not"')
            out += _clauses(item, negate=True)
        elif isinstance(item, dict):
            out.append(Clause(key, bounds=_bounds(key, item), negate=negate))
        else:
            values = item if isinstance(item, list) else [item]
            if not values or not all(isinstance(v, FieldValue) and _finite(v) for v in values):
                raise ValueError(
                    f"filter field {key!r}: a value, a non-empty list of values (strings, numbers, true/false), or "
                    'a range such as {"gte": 2020}'
                )
            out.append(Clause(key, values=tuple(canonical(v) for v in values), negate=negate))
    return out


def _bounds(key: str, item: dict) -> tuple[tuple[str, float | int | str], ...]:
    unknown = set(item) - set(RANGE_KEYS)
    if unknown or not item:
        raise ValueError(f"filter field {key!r}: a range takes gte, gt, lte, lt, not {sorted(unknown) or 'nothing'}")
    if ("gte" in item and "gt" in item) or ("lte" in item and "lt" in item):
        raise ValueError(f"filter field {key!r}: give one lower bound (gte or gt) and one upper (lte or lt)")
    kinds = set()
    for op, bound in item.items():
        if isinstance(bound, bool) or not isinstance(bound, int | float | str) or not _finite(bound):
            raise ValueError(f"filter field {key!r}: {op} takes a finite number or an ISO date, not {bound!r}")
        if isinstance(bound, str) and not ISO_DATE.fullmatch(bound):
            raise ValueError(f"filter field {key!r}: {op} {bound!r} is not a number or an ISO date (2021-05-01)")
        kinds.add(str if isinstance(bound, str) else float)
    if len(kinds) > 1:
        raise ValueError(f"filter field {key!r}: the bounds of a range are both numbers or both dates")
    return tuple((op, item[op]) for op in RANGE_KEYS if op in item)


def canonical(value: FieldValue) -> FieldValue:
    """A number as one value whatever its JSON spelling: 2010.0 is 2010 (a filter of 2010.0 matched nothing where
    the field held 2010). Booleans stay booleans; non-integral and huge floats stay floats."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def _finite(value: object) -> bool:
    """NaN and the infinities (JSON parsers accept them) match nothing on one engine and break another's query."""
    return not isinstance(value, float) or math.isfinite(value)


def fields_of(clauses: list[Clause]) -> set[str]:
    return {c.field for c in clauses}


def check_fields(clauses: list[Clause], indexed: set[str] | None, where: str) -> None:
    """Refuse a filter on a field the index does not hold (it would silently match nothing, or everything
    under "not"). `indexed` None: the index cannot say (synced before fields were recorded)."""
    missing = sorted(fields_of(clauses) - indexed) if indexed is not None else []
    if missing:
        held = ", ".join(sorted(indexed)) or "none"
        raise ValueError(f"{where}: filter on {missing} which the index does not hold (its fields: {held})")


Kinds = dict[str, set[str]]  # field -> the kinds of value it holds that a range compares: "number", "string"


def value_kind(value: object) -> str | None:
    """What a range compares a field value as: numbers as numbers, strings (ISO dates) as strings; booleans
    and lists not at all."""
    if isinstance(value, bool):
        return None
    return "number" if isinstance(value, int | float) else "string" if isinstance(value, str) else None


def field_kinds(documents_fields: Iterable[dict[str, Any]]) -> Kinds:
    kinds: Kinds = {}
    for fields in documents_fields:
        for name, value in fields.items():
            if (kind := value_kind(value)) is not None:
                kinds.setdefault(name, set()).add(kind)
    return kinds


def check_range_kinds(clauses: list[Clause], kinds: Kinds, where: str) -> None:
    """Refuse a range that cannot compare with any value its field holds (numbers over a field of strings, dates
    over a field of numbers): it would match nothing, silently. A field holding nothing comparable yet passes."""
    for clause in clauses:
        held = kinds.get(clause.field, set())
        if not clause.bounds or not held:
            continue
        wanted = "string" if isinstance(clause.bounds[0][1], str) else "number"
        if wanted not in held:
            ranged = "an ISO date" if wanted == "string" else "a number"
            raise ValueError(
                f"{where}: filter field {clause.field!r} holds {' and '.join(sorted(held))} values; a range of "
                f"{ranged} matches none of them"
            )


# -- Lucene (OpenSearch, Elasticsearch) ---------------------------------------------------------------------
LUCENE_KINDS = {"keyword": "string", "text": "string", "date": "string", "date_nanos": "string"} | {
    t: "number" for t in ("long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float")
}


def lucene_filter(clauses: list[Clause]) -> list[dict[str, Any]]:
    """Clauses -> non-scoring bool clauses: `terms` and `range` on fields.NAME; a "not" group as must_not."""
    positive = [_lucene_clause(c) for c in clauses if not c.negate]
    negative = [_lucene_clause(c) for c in clauses if c.negate]
    if negative:
        positive.append({"bool": {"must_not": [{"bool": {"filter": negative}}]}})
    return positive


def _lucene_clause(clause: Clause) -> dict[str, Any]:
    name = f"fields.{clause.field}"
    if clause.bounds:
        return {"range": {name: dict(clause.bounds)}}
    return {"terms": {name: list(clause.values)}}


# -- LanceDB (SQL) -------------------------------------------------------------------------------------------
SQL_OPS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}


def sql_filter(clauses: list[Clause], columns: dict[str, tuple[str, str]]) -> str | None:
    """Clauses -> a SQL predicate over the embedded table: exact values through its `tags` ("name=value"),
    ranges on the field's number or string column (`columns`: field -> (number column, string column))."""
    positive = [_sql_clause(c, columns) for c in clauses if not c.negate]
    negative = [_sql_clause(c, columns) for c in clauses if c.negate]
    if negative:
        positive.append("NOT (" + " AND ".join(negative) + ")")
    return " AND ".join(positive) or None


def _sql_clause(clause: Clause, columns: dict[str, tuple[str, str]]) -> str:
    if not clause.bounds:
        tags = dict.fromkeys(t for v in clause.values for t in (tag(clause.field, v), *_legacy_tags(clause.field, v)))
        return "array_has_any(tags, [" + ", ".join(quote(t) for t in tags) + "])"
    number, text = columns[clause.field]
    dates = isinstance(clause.bounds[0][1], str)
    column = text if dates else number
    parts = [f"{column} {SQL_OPS[op]} {quote(b) if dates else repr(float(b))}" for op, b in clause.bounds]
    return "(" + f"{column} IS NOT NULL AND " + " AND ".join(parts) + ")"


# -- in process (the memory engine) --------------------------------------------------------------------------
def matches(clauses: list[Clause], fields: dict[str, Any]) -> bool:
    """Whether a document's fields pass the clauses, as the embedded engine's SQL decides it: values by their
    tag (`tag`), number ranges on numbers only (not booleans), date ranges on strings, "not" on the rest."""
    positive = all(_matches(c, fields) for c in clauses if not c.negate)
    negative = [c for c in clauses if c.negate]
    return positive and not (negative and all(_matches(c, fields) for c in negative))


def _matches(clause: Clause, fields: dict[str, Any]) -> bool:
    value = fields.get(clause.field)
    if not clause.bounds:
        return value is not None and tag(clause.field, value) in {tag(clause.field, v) for v in clause.values}
    dates = isinstance(clause.bounds[0][1], str)
    if dates != isinstance(value, str) or isinstance(value, bool) or value is None:
        return False
    if not dates:
        value = float(value)
    compare = {"gte": value.__ge__, "gt": value.__gt__, "lte": value.__le__, "lt": value.__lt__}
    return all(compare[op](bound if dates else float(bound)) for op, bound in clause.bounds)


def tag(name: str, value: FieldValue) -> str:
    """The exact-match key of a field value, as the embedded engine stores it with each document (numbers in
    their `canonical` form)."""
    return f"{name}={canonical(value)}"


def _legacy_tags(name: str, value: FieldValue) -> tuple[str, ...]:
    """The tag an integral float had in an index synced before tags were canonical ("year=2010.0")."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53:
        return (f"{name}={float(value)}",)
    return ()


def quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"
