"""Faults against the real servers: a SIGKILLed node mid-sync, partial bulk failures, wrong credentials.
Also an interrupted embedded sync. The server tests restart the node with scripts/search-server."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, state_path, sync
from tests.conftest import server_url
from tests.connectors.conftest import crash_on_upsert
from tests.toydata import big_corpus

ROOT = Path(__file__).resolve().parents[2]
SYNC = str(Path(sys.executable).parent / "llmql-sync")


def stored_vectors(backend, index: str, ids: list[str]) -> dict[str, np.ndarray]:
    return {i: r.vector for i, r in backend.fetch(index, ids, with_vector=True).items()}


def all_ids(backend, index: str) -> list[str]:
    return sorted(i for i, _ in backend.content_hashes(index))


def _kill_server_mid_sync(command: list[str], state, engine: str, url: str, after_line: int) -> int:
    """Start the sync, kill its server once `after_line` lines are committed, restart the server: the committed line."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if state.is_file() and json.loads(state.read_text())["committed_line"] >= after_line:
                break
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        subprocess.run([str(ROOT / "scripts" / "search-server"), "kill", engine], check=True)
        _, err = process.communicate(timeout=120)
        assert process.returncode != 0, "the sync must fail when its server dies"
        assert url in err and "Traceback" not in err
        committed = json.loads(state.read_text())["committed_line"]
        assert after_line <= committed < 3000
    finally:
        if process.poll() is None:
            process.kill()
        subprocess.run([str(ROOT / "scripts" / "search-server"), "start", engine], check=True, capture_output=True)
    return committed


@pytest.mark.live
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
def test_sigkill_mid_sync_then_resume_gives_exactly_the_source(engine, tiny_export, tmp_path):
    url = server_url(engine)
    corpus = big_corpus(tmp_path / "corpus.jsonl", 3000)
    index, clean = f"llmql-kill-{engine}", f"llmql-clean-{engine}"
    backend = open_backend(engine, url)
    for name in (index, clean):
        backend.drop_index(name)
    cfg = SyncConfig(
        corpus=str(corpus), model=str(tiny_export), backend=engine, url=url, index=index, batch_size=16, runtime="onnx"
    )
    state = state_path(cfg)
    state.unlink(missing_ok=True)
    command = [SYNC, str(corpus), "--model", str(tiny_export), "--backend", engine, "--url", url]
    command += ["--index", index, "--batch-size", "16", "--runtime", "onnx", "--quiet"]
    committed = _kill_server_mid_sync(command, state, engine, url, after_line=800)
    backend = open_backend(engine, url)
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["indexed"] <= 3000 - committed + 16  # it continued, it did not start over
    assert sync(dataclasses.replace(cfg, index=clean, batch_size=64), progress=False).ok
    expected = [f"doc{i:05d}" for i in range(3000)]
    assert backend.count(index) == 3000 and all_ids(backend, index) == expected  # none twice, none missing
    sample = expected[::97]
    got, want = stored_vectors(backend, index, sample), stored_vectors(backend, clean, sample)
    for doc_id in sample:
        np.testing.assert_allclose(got[doc_id], want[doc_id], atol=1e-6)
    for name in (index, clean):
        backend.drop_index(name)


@pytest.mark.live
@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
def test_partial_bulk_failure_lands_the_rest_and_reports(engine, tiny_export, tmp_path):
    url = server_url(engine)
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"_id": f"p{i}", "text": f"kelp lagoon {i}", "year": 2000 + i} for i in range(6)]
    rows[3]["year"] = "not a number"  # conflicts with the long mapping made by the first document
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    index = f"llmql-partial-{engine}"
    open_backend(engine, url).drop_index(index)
    env = dict(os.environ)
    result = subprocess.run(
        [
            SYNC,
            str(corpus),
            "--model",
            str(tiny_export),
            "--backend",
            engine,
            "--url",
            url,
            "--index",
            index,
            "--field",
            "year",
            "--quiet",
            "--failures",
            str(tmp_path / "failed.jsonl"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    failures = [json.loads(x) for x in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failures] == ["p3"] and failures[0]["line"] == 4
    assert "400" in failures[0]["reason"]
    backend = open_backend(engine, url)
    assert backend.count(index) == 5
    backend.drop_index(index)


@pytest.mark.live
def test_wrong_credentials_are_named_without_a_traceback(tiny_export, toy_beir, monkeypatch):
    url = server_url("elasticsearch")
    from click.testing import CliRunner

    from llmql.connectors.cli import main

    monkeypatch.setenv("LLMQL_ELASTICSEARCH_USERNAME", "llmql")
    monkeypatch.setenv("LLMQL_ELASTICSEARCH_PASSWORD", "wrong-password")
    result = CliRunner().invoke(
        main,
        [
            str(toy_beir),
            "--model",
            str(tiny_export),
            "--backend",
            "elasticsearch",
            "--url",
            url,
            "--index",
            "llmql-auth",
            "--quiet",
        ],
    )
    assert result.exit_code == 1 and "authentication failed" in result.output and url in result.output
    assert "wrong-password" not in result.output and "Traceback" not in result.output


def test_interrupted_embedded_sync_resumes(tiny_export, tmp_path, monkeypatch):
    corpus = big_corpus(tmp_path / "corpus.jsonl", 300)
    cfg = SyncConfig(
        corpus=str(corpus),
        model=str(tiny_export),
        url=str(tmp_path / "db"),
        index="docs",
        batch_size=32,
        runtime="onnx",
    )
    crash_on_upsert(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        sync(cfg, progress=False)
    monkeypatch.undo()
    assert json.loads(state_path(cfg).read_text())["committed_line"] == 96
    report = sync(SyncConfig(**{**cfg.__dict__, "resume": True}), progress=False)
    assert report.ok and report.resumed_after_line == 96 and report.indexed == 300 - 96
    backend = open_backend("embedded", str(tmp_path / "db"))
    assert sorted(i for i, _ in backend.content_hashes("docs")) == [f"doc{i:05d}" for i in range(300)]


@pytest.mark.slow
def test_a_sigkilled_memory_sync_resumes_in_a_new_process_to_exactly_the_source(tiny_export, tmp_path):
    """The memory engine's log keeps what the sync confirmed: the sync process itself is SIGKILLed, a new process
    resumes it, and a third process finds exactly the corpus, with the vectors of a sync without faults."""
    corpus = big_corpus(tmp_path / "corpus.jsonl", 2000)
    location = str(tmp_path / "memory")
    cfg = SyncConfig(corpus=str(corpus), model=str(tiny_export), backend="memory", url=location, index="docs")
    state = state_path(cfg)
    state.unlink(missing_ok=True)
    command = [SYNC, str(corpus), "--model", str(tiny_export), "--backend", "memory", "--url", location]
    command += ["--index", "docs", "--batch-size", "16", "--runtime", "onnx", "--device", "cpu", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (state.is_file() and json.loads(state.read_text())["committed_line"] >= 400):
            assert process.poll() is None and time.time() < deadline, process.communicate()
            time.sleep(0.02)
        process.kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    committed = json.loads(state.read_text())["committed_line"]
    assert 400 <= committed < 2000
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["indexed"] <= 2000 - committed + 16
    check = (
        "import json, sys; from llmql.connectors.registry import open_backend; "
        f"b = open_backend('memory', {location!r}, device='cpu'); "
        "print(json.dumps(sorted(i for i, _ in b.content_hashes('docs'))))"
    )
    seen = json.loads(subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stdout)
    assert seen == [f"doc{i:05d}" for i in range(2000)]  # none twice, none missing, read by another process
    sync(SyncConfig(**{**cfg.__dict__, "url": str(tmp_path / "clean"), "runtime": "onnx"}), progress=False)
    sample = seen[::97]
    got = stored_vectors(open_backend("memory", location), "docs", sample)
    want = stored_vectors(open_backend("memory", str(tmp_path / "clean")), "docs", sample)
    for doc_id in sample:
        np.testing.assert_allclose(got[doc_id], want[doc_id], atol=1e-6)
