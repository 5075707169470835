"""The filter language: parsed and refused on hand-made filters, turned into each engine's form, and the same
filters giving the same documents on every backend (compared with the filter evaluated by hand)."""

import json
import uuid

import numpy as np
import pytest

from llmql.connectors.filters import (
    Clause,
    check_range_kinds,
    field_kinds,
    lucene_filter,
    parse_filter,
    sql_filter,
)
from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync


def test_clauses_of_a_filter():
    clauses = parse_filter({"lang": "en", "year": {"gte": 2020, "lt": 2023}, "not": {"tag": ["a", "b"]}})
    assert clauses == [
        Clause("lang", values=("en",)),
        Clause("year", bounds=(("gte", 2020), ("lt", 2023))),
        Clause("tag", values=("a", "b"), negate=True),
    ]
    assert parse_filter(None) == [] and parse_filter({"d": {"lte": "2021-05-01T10:00:00Z"}})[0].bounds


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([1], "JSON object"),
        ({"x": []}, "non-empty list"),
        ({"x": {"gte": 1, "gt": 2}}, "one lower bound"),
        ({"x": {"between": 1}}, "gte, gt, lte, lt"),
        ({"x": {"gte": 1, "lte": "2020-01-01"}}, "both numbers or both dates"),
        ({"x": {"gte": "yesterday"}}, "not a number or an ISO date"),
        ({"x": {"gte": True}}, "number or an ISO date"),
        ({"not": {"not": {"x": 1}}}, "nested"),
        ({f"f{i}": 1 for i in range(33)}, "at most 32 fields"),
        ({"x": list(range(300))}, "at most 256 values"),
        ({"year": {"gte": float("nan")}}, "finite number"),  # json.loads accepts NaN and Infinity
        ({"year": {"lt": float("inf")}}, "finite number"),
        ({"year": [2020, float("-inf")]}, "non-empty list"),
    ],
)
def test_bad_filters_are_refused_with_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_filter(bad)


def test_engine_forms_on_a_hand_made_filter():
    written = {"lang": ["en", "de"], "year": {"gte": 2020}, "not": {"kind": "x", "d": {"lt": "2021-01-01"}}}
    clauses = parse_filter(written)
    assert lucene_filter(clauses) == [
        {"terms": {"fields.lang": ["en", "de"]}},
        {"range": {"fields.year": {"gte": 2020}}},
        {
            "bool": {
                "must_not": [
                    {
                        "bool": {
                            "filter": [{"terms": {"fields.kind": ["x"]}}, {"range": {"fields.d": {"lt": "2021-01-01"}}}]
                        }
                    }
                ]
            }
        },
    ]
    columns = {"year": ("num_0", "str_0"), "d": ("num_1", "str_1")}
    assert sql_filter(clauses, columns) == (
        "array_has_any(tags, ['lang=en', 'lang=de']) AND (num_0 IS NOT NULL AND num_0 >= 2020.0) AND "
        "NOT (array_has_any(tags, ['kind=x']) AND (str_1 IS NOT NULL AND str_1 < '2021-01-01'))"
    )


DOCS = [
    {
        "_id": f"m{i:02d}",
        "title": f"note {i}",
        "text": "kelp lagoon survey " * (1 + i % 3),
        "year": 2015 + i % 9,
        "date": f"20{10 + i % 12:02d}-0{1 + i % 9}-15",
        "lang": ["en", "de", "fr"][i % 3],
        "score": round(0.1 * (i % 11), 1),
    }
    for i in range(30)
]

FILTERS = [
    {"lang": "en"},
    {"lang": ["de", "fr"], "year": {"gte": 2019}},
    {"year": {"gt": 2017, "lte": 2020}},
    {"score": {"lt": 0.5}},
    {"date": {"gte": "2015-01-01", "lt": "2019-06-01"}},
    {"not": {"lang": "en"}},
    {"year": {"gte": 2016}, "not": {"lang": "fr", "score": {"gte": 0.3}}},
    # numbers are numbers whatever their spelling (issue 37: 2010.0 matched nothing where 2010 matched)
    {"year": 2019.0},
    {"year": [2016.0, 2020]},
    {"score": [0, 1, 0.5]},  # the corpus holds 0.0, 1.0 and 0.5
    {"not": {"year": [2016.0, 2017]}},
]


def matches(doc: dict, flt: dict) -> bool:
    """The filter evaluated by hand, the reference every backend must agree with."""
    for key, cond in flt.items():
        if key == "not":
            if matches(doc, cond):
                return False
            continue
        value = doc.get(key)
        if isinstance(cond, dict):
            ops = {"gte": value >= cond.get("gte", value), "gt": "gt" not in cond or value > cond["gt"]}
            ops |= {"lte": value <= cond.get("lte", value), "lt": "lt" not in cond or value < cond["lt"]}
            if not all(ops.values()):
                return False
        elif value not in (cond if isinstance(cond, list) else [cond]):
            return False
    return True


def test_the_same_filter_gives_the_same_documents_on_every_backend(backend_spec, tiny_export, tmp_path):
    from llmql.connectors.corpus import CorpusFormat
    from llmql.export.runtime import OnnxEncoder

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    name, location = backend_spec
    index = f"llmql-filters-{uuid.uuid4().hex[:6]}"
    fmt = CorpusFormat(keep_fields=("year", "date", "lang", "score"))
    cfg = SyncConfig(corpus=str(corpus), model=str(tiny_export), backend=name, url=location, index=index)
    backend = open_backend(name, location)
    try:
        assert sync(SyncConfig(**{**cfg.__dict__, "corpus_format": fmt, "runtime": "onnx"}), progress=False).ok
        vector = OnnxEncoder.from_dir(tiny_export).encode_queries(["kelp lagoon"])[0]
        for flt in FILTERS:
            expected = {d["_id"] for d in DOCS if matches(d, flt)}
            assert expected and len(expected) < len(DOCS), flt  # each filter keeps some and drops some
            assert {h.id for h in backend.knn(index, vector, 50, flt)} == expected, flt
            assert {h.id for h in backend.bm25(index, "kelp lagoon", 50, flt)} == expected, flt
        with pytest.raises(ValueError, match="does not hold"):
            backend.knn(index, np.asarray(vector), 5, {"author": "x"})
        for flt in ({"lang": {"gte": 5}}, {"year": {"gte": "2019-01-01"}}, {"not": {"lang": {"lt": 1}}}):
            # a range its field's values cannot compare with matched nothing silently (issue 25)
            with pytest.raises(ValueError, match="matches none of them"):
                backend.knn(index, np.asarray(vector), 5, flt)
            with pytest.raises(ValueError, match="matches none of them"):
                backend.bm25(index, "kelp lagoon", 5, flt)
    finally:
        backend.drop_index(index)


def test_a_range_its_field_cannot_compare_with_is_refused():
    kinds = field_kinds([{"year": 2020, "lang": "en", "flag": True}, {"year": 2021.5, "lang": "de", "d": "2020-01-01"}])
    assert kinds == {"year": {"number"}, "lang": {"string"}, "d": {"string"}}  # booleans compare as nothing
    check_range_kinds(parse_filter({"year": {"gte": 2020}, "d": {"lt": "2021-01-01"}, "flag": {"gte": 1}}), kinds, "i")
    with pytest.raises(ValueError, match="'lang' holds string values; a range of a number"):
        check_range_kinds(parse_filter({"lang": {"gte": 1}}), kinds, "i")
    with pytest.raises(ValueError, match="'year' holds number values; a range of an ISO date"):
        check_range_kinds(parse_filter({"not": {"year": {"lt": "2020-01-01"}}}), kinds, "i")
    mixed = field_kinds([{"v": 1}, {"v": "2020-01-01"}])
    check_range_kinds(parse_filter({"v": {"gte": 0}}), mixed, "i")  # some values compare: no refusal
