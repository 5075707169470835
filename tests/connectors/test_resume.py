"""Nothing lost by a resume, a --delete-missing with bad lines, or a write the engine acknowledged and dropped:
issue 37's defects 1 and 2, each of which exited 0 with documents missing, and the check every sync ends with."""

import importlib
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from llmql.connectors.registry import BACKENDS, open_backend
from llmql.connectors.sync import SyncConfig, sync
from tests.connectors.test_data_safety import config
from tests.toydata import big_corpus

SYNC = str(Path(sys.executable).parent / "llmql-sync")


def backend_class(name: str):
    module, cls, _ = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def interrupt_at_write(monkeypatch, name: str, call: int) -> None:
    """The engine's `call`-th write raises KeyboardInterrupt (a crash mid-sync); monkeypatch.undo() ends it."""
    cls = backend_class(name)
    original, calls = cls.upsert, []

    def crashing(self, index, records, **kwargs):
        calls.append(len(records))
        if len(calls) == call:
            raise KeyboardInterrupt("simulated crash")
        return original(self, index, records, **kwargs)

    monkeypatch.setattr(cls, "upsert", crashing)


def ids_in(name: str, location: str, index: str = "docs") -> list[str]:
    from llmql.connectors import memory

    memory._STORES.clear()  # what a new process reads
    return sorted(i for i, _ in open_backend(name, location).content_hashes(index))


@pytest.fixture(params=["embedded", "memory"])
def engine(request, tmp_path):
    return request.param, str(tmp_path / request.param)


def cfg_for(engine, corpus, tiny_export, **kw) -> SyncConfig:
    """A sync of `corpus` into index "docs" of `engine`, 16 documents a batch."""
    return config(engine, corpus, tiny_export, "docs", batch_size=16, **kw)


def interrupted(engine, corpus, tiny_export, monkeypatch, call: int = 4) -> SyncConfig:
    cfg = cfg_for(engine, corpus, tiny_export)
    interrupt_at_write(monkeypatch, engine[0], call)
    with pytest.raises(KeyboardInterrupt):
        sync(cfg, progress=False)
    monkeypatch.undo()
    return replace(cfg, resume=True)


def test_a_resume_after_the_corpus_changed_writes_every_document(engine, tiny_export, tmp_path, monkeypatch, caplog):
    corpus = big_corpus(tmp_path / "corpus.jsonl", 300)
    resume = interrupted(engine, corpus, tiny_export, monkeypatch)
    lines = corpus.read_text().splitlines()
    prepended = [json.dumps({"_id": f"new{i}", "title": "", "text": f"kelp note {i}"}) for i in range(10)]
    corpus.write_text("\n".join(prepended + lines) + "\n")  # 10 lines before the committed line
    report = sync(resume, progress=False)
    assert report.ok and report.verified.documents == 310
    assert ids_in(*engine) == sorted([f"doc{i:05d}" for i in range(300)] + [f"new{i}" for i in range(10)])
    assert "the corpus changed since the interrupted sync" in caplog.text


def test_a_resume_after_the_index_folder_was_deleted_writes_every_document(
    engine, tiny_export, tmp_path, monkeypatch, caplog
):
    corpus = big_corpus(tmp_path / "corpus.jsonl", 300)
    resume = interrupted(engine, corpus, tiny_export, monkeypatch)
    shutil.rmtree(engine[1])
    report = sync(resume, progress=False)
    assert report.ok and report.indexed == 300
    assert ids_in(*engine) == [f"doc{i:05d}" for i in range(300)]
    assert "the index holds 0 documents of the 48 the interrupted sync confirmed" in caplog.text


def test_a_resume_after_a_memory_segment_was_deleted_writes_it_again(tiny_export, tmp_path, monkeypatch):
    engine = ("memory", str(tmp_path / "memory"))
    corpus = big_corpus(tmp_path / "corpus.jsonl", 300)
    resume = interrupted(engine, corpus, tiny_export, monkeypatch)
    segments = sorted((tmp_path / "memory" / "docs").glob("*-upsert.npz"))
    segments[1].unlink()  # one confirmed batch's documents gone
    from llmql.connectors import memory

    memory._STORES.clear()  # the resume is a new process
    report = sync(resume, progress=False)
    assert report.ok and ids_in(*engine) == [f"doc{i:05d}" for i in range(300)]
    assert report.unchanged == 32  # the two batches still there are not encoded again


def test_a_resume_writes_no_document_twice_and_encodes_only_what_is_missing(engine, tiny_export, tmp_path, monkeypatch):
    corpus = big_corpus(tmp_path / "corpus.jsonl", 200)
    resume = interrupted(engine, corpus, tiny_export, monkeypatch)
    report = sync(resume, progress=False)
    assert report.ok and report.unchanged == 48 and report.indexed == 152
    assert ids_in(*engine) == [f"doc{i:05d}" for i in range(200)]


def test_delete_missing_keeps_the_documents_of_skipped_and_unreadable_lines(engine, tiny_export, tmp_path):
    corpus = big_corpus(tmp_path / "corpus.jsonl", 300)
    assert sync(cfg_for(engine, corpus, tiny_export), progress=False).ok
    rows = corpus.read_text().splitlines()
    for i in range(100, 200):
        rows[i] = rows[i][:-5]  # malformed JSON: no id can be read
    rows[5] = json.dumps({"_id": "doc00005", "title": "", "text": "   "})  # a known id with blank text
    corpus.write_text("\n".join(rows) + "\n")
    report = sync(cfg_for(engine, corpus, tiny_export, delete_missing=True, on_error="skip"), progress=False)
    assert report.deleted == 0 and report.deletions_withheld == 100
    assert report.skipped_ids == ["doc00005"]
    assert len(ids_in(*engine)) == 300


def test_delete_missing_with_only_known_bad_ids_deletes_just_the_documents_gone(engine, tiny_export, tmp_path):
    corpus = big_corpus(tmp_path / "corpus.jsonl", 40)
    assert sync(cfg_for(engine, corpus, tiny_export), progress=False).ok
    rows = corpus.read_text().splitlines()
    rows[3] = json.dumps({"_id": "doc00003", "title": "", "text": ""})  # skipped: kept
    del rows[10]  # doc00010 left the corpus: deleted
    corpus.write_text("\n".join(rows) + "\n")
    report = sync(cfg_for(engine, corpus, tiny_export, delete_missing=True, on_error="skip"), progress=False)
    assert report.deleted == 1 and report.deletions_withheld == 0 and report.skipped_ids == ["doc00003"]
    assert ids_in(*engine) == [f"doc{i:05d}" for i in range(40) if i != 10]


def test_a_write_the_engine_acknowledged_but_dropped_fails_the_sync(engine, tiny_export, tmp_path, monkeypatch):
    """The end-of-sync check: the engine says written, the index lacks it; the CLI names it and exits 1."""
    cls = backend_class(engine[0])
    original = cls.upsert

    def dropping(self, index, records, **kwargs):
        result = original(self, index, [r for r in records if r.id != "doc00007"], **kwargs)
        result.written.extend(r.id for r in records if r.id == "doc00007")
        return result

    corpus = big_corpus(tmp_path / "corpus.jsonl", 40)
    monkeypatch.setattr(cls, "upsert", dropping)
    report = sync(cfg_for(engine, corpus, tiny_export), progress=False)
    assert not report.ok and report.verified.missing == ["doc00007"] and report.failed == 0
    monkeypatch.undo()
    again = sync(cfg_for(engine, corpus, tiny_export, incremental=True), progress=False)
    assert again.ok and again.indexed == 1
    assert again.verified.digest == sync(cfg_for(engine, corpus, tiny_export), progress=False).verified.digest


def test_the_cli_summary_says_what_was_verified(tiny_export, tmp_path):
    corpus = big_corpus(tmp_path / "corpus.jsonl", 20)
    done = subprocess.run(
        [SYNC, str(corpus), "--model", str(tiny_export), "--url", str(tmp_path / "db"), "--runtime", "onnx", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    verified = json.loads(done.stdout.strip().splitlines()[-1])["verified"]
    assert verified["documents"] == 20 and verified["ok"] and verified["digest"].startswith("sha256:")


def test_adding_end_states_is_not_skipped_as_unchanged_by_a_resume_or_an_incremental_sync(
    engine, tiny_export, tmp_path, monkeypatch
):
    """A document's stored form includes its [E] states: a sync that adds them (interrupted and resumed, or
    incremental) writes them to every document, though no text changed (found in review: the content hash
    covered the text and the model only, so a resume counted every remaining document unchanged)."""
    corpus = big_corpus(tmp_path / "corpus.jsonl", 120)
    assert sync(cfg_for(engine, corpus, tiny_export), progress=False).ok  # vectors only
    with_states = replace(cfg_for(engine, corpus, tiny_export), end_states="fp16")
    interrupt_at_write(monkeypatch, engine[0], 3)
    with pytest.raises(KeyboardInterrupt):
        sync(with_states, progress=False)
    monkeypatch.undo()
    report = sync(replace(with_states, resume=True), progress=False)
    assert report.ok and report.indexed + report.unchanged == 120 and report.indexed >= 120 - 32
    ids = [f"doc{i:05d}" for i in range(120)]
    held = open_backend(*engine).fetch("docs", ids, with_state=True)
    assert all(held[i].end_states for i in ids)
    again = sync(replace(with_states, incremental=True, end_states="int8"), progress=False)
    assert again.indexed == 120  # another state format: every document rewritten
