"""`llmql-sync` on every backend: idempotent, incremental, alias generations, refusals, bad input, faults."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from llmql.connectors.base import IndexMismatch
from llmql.connectors.cli import main as sync_cli
from llmql.connectors.registry import open_backend
from llmql.connectors.state_blobs import unpack
from llmql.connectors.sync import SyncConfig, state_path, sync
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer


def config(backend_spec, corpus, model, index, **kw):
    name, location = backend_spec
    return SyncConfig(
        corpus=str(corpus),
        model=str(model),
        backend=name,
        url=location,
        index=index,
        batch_size=8,
        runtime="onnx",
        **kw,
    )


@pytest.fixture
def index_name(backend_spec):
    import uuid

    name = f"llmql-sync-{uuid.uuid4().hex[:8]}"
    yield name
    handle = open_backend(*backend_spec)
    handle.drop_index(name)


def test_sync_twice_leaves_the_same_index(backend_spec, toy_beir, tiny_export, index_name, tmp_path):
    first = sync(config(backend_spec, toy_beir, tiny_export, index_name, end_states="fp16"), progress=False)
    assert first.ok and first.indexed == 24
    backend = open_backend(*backend_spec)
    query = OnnxEncoder.from_dir(tiny_export).encode_queries(["kelp lagoon"])[0]
    before = [(h.id, round(h.score, 5)) for h in backend.knn(index_name, query, 24)]
    again = sync(config(backend_spec, toy_beir, tiny_export, index_name, end_states="fp16"), progress=False)
    assert again.ok and again.indexed == 24
    assert backend.count(index_name) == 24
    assert [(h.id, round(h.score, 5)) for h in backend.knn(index_name, query, 24)] == before
    # the cached [E] states are the QL scorer's own states
    record = backend.fetch(index_name, ["d3"], with_state=True)["d3"]
    expected = OnnxQLScorer.from_dir(tiny_export).end_states([record.text], [record.title])
    np.testing.assert_allclose(unpack([record.end_states]).keys, expected.keys, atol=2e-3)
    assert not state_path(config(backend_spec, toy_beir, tiny_export, index_name)).exists()


def test_incremental_and_delete_missing(backend_spec, toy_beir, tiny_export, index_name, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(toy_beir / "corpus.jsonl", corpus)
    sync(config(backend_spec, corpus, tiny_export, index_name), progress=False)
    lines = corpus.read_text().splitlines()
    changed = json.loads(lines[0])
    changed["text"] = "entirely new text about volcanic basalt"
    corpus.write_text("\n".join([json.dumps(changed), *lines[1:-2]]) + "\n")  # 1 changed, 2 removed
    report = sync(
        config(backend_spec, corpus, tiny_export, index_name, incremental=True, delete_missing=True), progress=False
    )
    assert (report.indexed, report.unchanged, report.deleted) == (1, 21, 2)
    backend = open_backend(*backend_spec)
    assert backend.count(index_name) == 22
    assert backend.fetch(index_name, [changed["_id"]])[changed["_id"]].text == changed["text"]


def test_alias_builds_a_new_generation_and_swaps(backend_spec, toy_beir, tiny_export, index_name):
    first = sync(config(backend_spec, toy_beir, tiny_export, index_name, alias=index_name + "-live"), progress=False)
    second = sync(config(backend_spec, toy_beir, tiny_export, index_name, alias=index_name + "-live"), progress=False)
    backend = open_backend(*backend_spec)
    assert first.index != second.index and second.replaced == [first.index]
    assert backend.count(index_name + "-live") == 24
    backend.drop_index(second.index)


def test_mismatched_index_is_refused_before_writing(backend_spec, toy_beir, tiny_export, other_export, index_name):
    sync(config(backend_spec, toy_beir, tiny_export, index_name), progress=False)
    with pytest.raises(IndexMismatch, match=index_name):
        sync(config(backend_spec, toy_beir, other_export, index_name), progress=False)
    assert open_backend(*backend_spec).count(index_name) == 24


def test_malformed_lines_fail_or_are_skipped_and_reported(backend_spec, toy_beir, tiny_export, index_name, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    good = (toy_beir / "corpus.jsonl").read_bytes().splitlines()[:3]
    corpus.write_bytes(
        b"\n".join(
            [
                good[0],
                b'{"_id": "x1", "text": ',
                b'{"text": "no id"}',
                good[1],
                good[1],
                b'{"_id": "e", "text": "  "}',
                b'{"_id": "u", "text": "\xff\xfe"}',
                good[2],
            ]
        )
        + b"\n"
    )
    name, location = backend_spec
    runner = CliRunner()
    args = [
        str(corpus),
        "--model",
        str(tiny_export),
        "--backend",
        name,
        "--url",
        location,
        "--index",
        index_name,
        "--quiet",
        "--failures",
        str(tmp_path / "failures.jsonl"),
    ]
    failed = runner.invoke(sync_cli, args)
    assert failed.exit_code == 1 and "corpus.jsonl:2: malformed JSON" in failed.output
    assert "Traceback" not in failed.output
    skipped = runner.invoke(sync_cli, [*args, "--on-error", "skip"])
    assert skipped.exit_code == 1  # something failed, so the status says so
    failures = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    reasons = {f["line"]: f["reason"] for f in failures}
    assert set(reasons) == {2, 3, 5, 6, 7}
    assert "malformed JSON" in reasons[2] and "missing id" in reasons[3] and "duplicate id" in reasons[5]
    assert "empty text" in reasons[6] and "invalid UTF-8" in reasons[7]
    assert json.loads(skipped.output.splitlines()[0])["indexed"] == 3
    assert open_backend(*backend_spec).count(index_name) == 3


def test_unreachable_server_and_bad_model_are_clear_messages(tiny_export, tmp_path, toy_beir):
    runner = CliRunner()
    result = runner.invoke(
        sync_cli,
        [
            str(toy_beir),
            "--model",
            str(tiny_export),
            "--backend",
            "opensearch",
            "--url",
            "http://127.0.0.1:9",
            "--index",
            "x",
            "--quiet",
        ],
    )
    assert result.exit_code == 1 and "http://127.0.0.1:9" in result.output and "cannot connect" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        sync_cli,
        [
            str(toy_beir),
            "--model",
            str(tiny_export),
            "--backend",
            "opensearch",
            "--url",
            "http://user:secret@127.0.0.1:9",
            "--index",
            "x",
            "--quiet",
        ],
    )
    assert result.exit_code == 1 and "credentials in the URL are not accepted" in result.output
    assert "secret" not in result.output


def test_insecure_warns(tiny_export, toy_beir):
    result = CliRunner().invoke(
        sync_cli,
        [
            str(toy_beir),
            "--model",
            str(tiny_export),
            "--backend",
            "opensearch",
            "--url",
            "https://127.0.0.1:9",
            "--insecure",
            "--quiet",
        ],
    )
    assert "TLS certificate verification is off" in result.output


def test_sync_counts_the_documents_it_cuts(tiny_export, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    long_text = " ".join(["kelp lagoon granite ridge"] * 120)  # far past the model's 200 passage tokens
    rows = [{"_id": f"long{i}", "text": long_text} for i in range(3)] + [{"_id": "short", "text": "kelp"}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [str(corpus), "--model", str(tiny_export), "--url", str(tmp_path / "index"), "--quiet"]
    result = CliRunner().invoke(sync_cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["cut"] == 3
    assert "3 document(s) were longer than the model's passage length" in result.stderr
