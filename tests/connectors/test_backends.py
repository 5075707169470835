"""The backend contract, run against the embedded engine and real OpenSearch and Elasticsearch servers."""

import numpy as np
import pytest

from llmql.connectors.base import BackendError, IndexMismatch, Record


def unit(*values):
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


RECORDS = [
    Record(
        "a",
        "Kelp forests",
        "kelp forests grow in cold water",
        unit(1, 0, 0, 0),
        "h-a",
        b"\x01\x02",
        {"year": 2020, "lang": "en"},
    ),
    Record("b", "Granite", "granite ridge formed from magma", unit(0, 1, 0, 0), "h-b", None, {"year": 2021}),
    Record("c", "", "kelp and granite in the same bay", unit(1, 1, 0, 0), "h-c", b"\x03", {"year": 2021}),
]


def test_write_search_fetch_delete(backend):
    index = backend.test_index()
    info = backend.open_index(index, 4, "model-x", fields=("year", "lang"))
    assert info.count == 0
    assert backend.upsert(index, RECORDS).written == ["a", "b", "c"]
    backend.refresh(index)
    assert backend.count(index) == 3

    bm25 = backend.bm25(index, "kelp", 10)
    assert {h.id for h in bm25} == {"a", "c"} and all(h.score > 0 for h in bm25)
    knn = backend.knn(index, unit(1, 0, 0, 0), 3)
    assert [h.id for h in knn][:2] == ["a", "c"]
    assert knn[0].score == pytest.approx(1.0, abs=1e-3)  # cosine, whatever the engine's own score scale
    assert knn[1].score == pytest.approx(float(unit(1, 1, 0, 0)[0]), abs=1e-3)

    assert [h.id for h in backend.knn(index, unit(1, 0, 0, 0), 3, {"year": 2021})] == ["c", "b"]
    assert [h.id for h in backend.bm25(index, "kelp", 10, {"year": [2021]})] == ["c"]
    assert backend.bm25(index, "kelp", 10, {"year": 2020, "lang": "en"})[0].id == "a"

    fetched = backend.fetch(index, ["a", "b", "missing"], with_state=True, with_vector=True)
    np.testing.assert_allclose(fetched["a"].vector, unit(1, 0, 0, 0), atol=1e-6)
    assert backend.fetch(index, ["a"])["a"].vector is None
    assert set(fetched) == {"a", "b"}
    assert fetched["a"].end_states == b"\x01\x02" and fetched["b"].end_states is None
    assert fetched["a"].fields["year"] == 2020 and fetched["a"].content_hash == "h-a"
    assert dict(backend.content_hashes(index)) == {"a": "h-a", "b": "h-b", "c": "h-c"}

    assert backend.delete(index, ["b"]) == 1
    backend.refresh(index)
    assert backend.count(index) == 2


def test_upsert_replaces_by_id(backend):
    index = backend.test_index()
    backend.open_index(index, 4, "model-x", fields=("year", "lang"))
    backend.upsert(index, RECORDS)
    backend.upsert(index, [Record("a", "Kelp", "changed text about basalt", unit(0, 0, 1, 0), "h-a2")])
    backend.refresh(index)
    assert backend.count(index) == 3
    assert backend.fetch(index, ["a"])["a"].text == "changed text about basalt"
    assert backend.knn(index, unit(0, 0, 1, 0), 1)[0].id == "a"


def test_dimension_or_model_mismatch_is_refused(backend):
    index = backend.test_index()
    backend.open_index(index, 4, "model-x")
    with pytest.raises(IndexMismatch, match=index):
        backend.open_index(index, 8, "model-x")
    with pytest.raises(IndexMismatch, match="model-y"):
        backend.open_index(index, 4, "model-y")


def test_alias_swap_is_atomic_and_reports_the_previous_index(backend):
    first, second, alias = backend.test_index(), backend.test_index(), backend.test_index()
    for index, record in ((first, RECORDS[0]), (second, RECORDS[1])):
        backend.open_index(index, 4, "model-x", fields=("year", "lang"))
        backend.upsert(index, [record])
        backend.refresh(index)
    assert backend.swap_alias(alias, first) == []
    assert [h.id for h in backend.knn(alias, unit(1, 1, 0, 0), 5)] == ["a"]
    assert backend.swap_alias(alias, second) == [first]
    assert [h.id for h in backend.knn(alias, unit(1, 1, 0, 0), 5)] == ["b"]
    assert backend.open_index(alias, 4, "model-x").name == second


def test_missing_index_is_a_clear_error(backend):
    with pytest.raises(BackendError, match="no-such-index"):
        backend.count("no-such-index-llmql")


def test_embedded_refuses_metadata_fields_it_was_not_created_for(tmp_path):
    from llmql.connectors.registry import open_backend

    backend = open_backend("embedded", str(tmp_path))
    backend.open_index("docs", 4, "model-x", fields=("year",))
    with pytest.raises(ValueError, match=r"created for metadata fields \['year'\], not \['lang'\]"):
        backend.upsert("docs", [RECORDS[0]])  # year and lang
    assert backend.count("docs") == 0


def test_a_missing_index_names_the_indexes_and_aliases_there(backend):
    index = backend.test_index()
    backend.open_index(index, 4, "model-x")
    backend.swap_alias(index + "-live", index)
    for call in (lambda: backend.index_info("no-such-index"), lambda: backend.open_index("no-such", 4, "m", False)):
        with pytest.raises(BackendError, match="no index or alias named") as err:
            call()
        assert index in str(err.value) and index + "-live" in str(err.value)
