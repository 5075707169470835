"""A failed sync never loses or half-changes an index: bad corpora are refused before the first write, on every
backend, and failures found before an interruption survive a resume."""

import json

import pytest

from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, state_path, sync
from llmql.train.core.errors import DataError
from tests.connectors.conftest import crash_on_upsert
from tests.toydata import big_corpus


def config(backend_spec, corpus, model, index, **kw) -> SyncConfig:
    name, location = backend_spec
    return SyncConfig(
        corpus=str(corpus), model=str(model), backend=name, url=location, index=index, runtime="onnx", **kw
    )


def with_bad_line(path, source, line: int):
    rows = source.read_text().splitlines()
    rows[line - 1] = '{"_id": "broken", "text": '
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def index_name(backend_spec):
    import uuid

    name = f"llmql-safe-{uuid.uuid4().hex[:8]}"
    yield name
    backend = open_backend(*backend_spec)
    for index in [name, *(i for i in backend_generations(backend, name))]:
        backend.drop_index(index)


def backend_generations(backend, alias: str) -> list[str]:
    target = backend.resolve(alias)
    return [target] if target and target != alias else []


def test_a_bad_line_with_recreate_leaves_the_index_as_it_was(backend_spec, tiny_export, index_name, tmp_path):
    good = big_corpus(tmp_path / "good.jsonl", 100)
    assert sync(config(backend_spec, good, tiny_export, index_name, batch_size=16), progress=False).indexed == 100
    bad = with_bad_line(tmp_path / "bad.jsonl", big_corpus(tmp_path / "other.jsonl", 100), 80)
    for extra in ({"recreate": True}, {}):
        cfg = config(backend_spec, bad, tiny_export, index_name, batch_size=16, **extra)
        with pytest.raises(DataError, match=r"bad\.jsonl:80: .*nothing was written"):
            sync(cfg, progress=False)
        assert open_backend(*backend_spec).count(index_name) == 100
        assert not state_path(cfg).exists()


def test_a_bad_line_with_alias_builds_no_generation(backend_spec, tiny_export, index_name, tmp_path):
    bad = with_bad_line(tmp_path / "bad.jsonl", big_corpus(tmp_path / "c.jsonl", 40), 30)
    with pytest.raises(DataError):
        sync(config(backend_spec, bad, tiny_export, index_name, alias=index_name), progress=False)
    backend = open_backend(*backend_spec)
    assert backend.resolve(index_name) is None


def test_an_empty_corpus_is_refused_where_it_would_empty_the_index(backend_spec, tiny_export, index_name, tmp_path):
    good = big_corpus(tmp_path / "good.jsonl", 20)
    sync(config(backend_spec, good, tiny_export, index_name), progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for extra in ({"recreate": True}, {"delete_missing": True}):
        with pytest.raises(DataError, match="no documents"):
            sync(config(backend_spec, empty, tiny_export, index_name, **extra), progress=False)
    assert open_backend(*backend_spec).count(index_name) == 20


def test_an_empty_corpus_warns(tiny_export, tmp_path, caplog):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    report = sync(config(("embedded", str(tmp_path / "db")), empty, tiny_export, "docs"), progress=False)
    assert report.indexed == 0 and "no documents to sync" in caplog.text


def test_failures_before_an_interruption_are_reported_after_resume(tiny_export, tmp_path, monkeypatch):
    corpus = with_bad_line(tmp_path / "c.jsonl", big_corpus(tmp_path / "src.jsonl", 96), 5)
    failures = tmp_path / "failures.jsonl"
    cfg = config(
        ("embedded", str(tmp_path / "db")),
        corpus,
        tiny_export,
        "docs",
        batch_size=16,
        on_error="skip",
        failures_file=str(failures),
    )
    crash_on_upsert(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        sync(cfg, progress=False)
    monkeypatch.undo()
    report = sync(SyncConfig(**{**cfg.__dict__, "resume": True}), progress=False)
    assert report.resumed_after_line == 32 and not report.ok and report.failed == 1
    assert [json.loads(x)["line"] for x in failures.read_text().splitlines()] == [5]
    assert open_backend("embedded", str(tmp_path / "db")).count("docs") == 95


def test_a_sync_started_over_drops_the_abandoned_generation(tiny_export, tmp_path, monkeypatch):
    corpus = big_corpus(tmp_path / "c.jsonl", 64)
    cfg = config(("embedded", str(tmp_path / "db")), corpus, tiny_export, "docs", alias="live", batch_size=16)
    crash_on_upsert(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        sync(cfg, progress=False)
    abandoned = json.loads(state_path(cfg).read_text())["target"]
    monkeypatch.undo()
    report = sync(cfg, progress=False)
    backend = open_backend("embedded", str(tmp_path / "db"))
    assert report.index != abandoned and backend.resolve(abandoned) is None
    assert backend.resolve("live") == report.index and backend.count("live") == 64


def test_a_tsv_without_a_header_is_refused(tiny_export, tmp_path):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("d1\tfirst document\nd2\tsecond document\n")
    with pytest.raises(DataError, match="header line has no column '_id'"):
        sync(config(("embedded", str(tmp_path / "db")), corpus, tiny_export, "docs"), progress=False)


def test_an_alias_that_names_an_index_is_refused_before_any_model_runs(
    backend_spec, tiny_export, index_name, tmp_path, monkeypatch
):
    """F8: `--alias A` where A is a plain index was refused only at the swap, after encoding the whole corpus,
    leaving a full orphan generation each time."""
    import llmql.export.runtime as runtime
    from llmql.train.core.errors import LLMQLError

    good = big_corpus(tmp_path / "good.jsonl", 20)
    sync(config(backend_spec, good, tiny_export, index_name), progress=False)
    backend = open_backend(*backend_spec)
    loaded = []
    monkeypatch.setattr(runtime, "load_encoder", lambda *a, **k: loaded.append(1))
    with pytest.raises(LLMQLError, match="names an index, not an alias"):
        sync(config(backend_spec, good, tiny_export, "unused", alias=index_name), progress=False)
    assert not loaded  # refused before a model was loaded, let alone run
    assert backend.resolve(index_name) == index_name and backend.count(index_name) == 20
    every = backend._tables() if backend.name == "embedded" else backend._names()
    assert not [n for n in every if n.startswith(f"{index_name}-")]  # no generation was begun
