"""The main job end to end on a tiny model and the toy collection: train, export, sync, evaluate; then reuse."""

import json
import os
import shlex
import uuid

import pytest
from click.testing import CliRunner

from llmql.plugin.cli import main
from llmql.plugin.search_cli import eval_main, search_main
from llmql.train.data import read_id_file
from tests.conftest import server_url


def test_quickstart_runs_end_to_end_and_reuses_its_work(tiny_llama, toy_beir, tmp_path):
    args = [
        "quickstart",
        "--data",
        str(toy_beir),
        "--model",
        str(tiny_llama),
        "--workdir",
        str(tmp_path),
        "--corpus-docs",
        "10",
        "--budget",
        "0.2",
        "--runtime",
        "onnx",
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    rows = {line.split()[0]: line for line in first.output.splitlines() if line.split()}
    assert "hybrid+ql" not in rows  # no untuned row: the tuned row is hybrid + QL when tuning kept QL
    for row in ("bm25", "dense", "hybrid", "tuned"):
        assert row in rows, row
        assert (row == "bm25") != ("[" in rows[row]), rows[row]  # every other row has its interval against BM25
    assert "  tuned: what llmql-search does by default (search.json):" in first.output  # each row's settings said
    assert first.output.startswith(f"work folder: {tmp_path}")
    search = json.loads((tmp_path / "export" / "search.json").read_text())["search"]
    assert ("ql_weight" in search) == (search["rerank_depth"] > 0)  # no inert value in search.json
    assert (tmp_path / "export" / "manifest.json").is_file() and (tmp_path / "eval" / "bm25.run").is_file()
    held_out = read_id_file(tmp_path / "tuning-queries.txt")
    test_queries = {r.split("\t")[0] for r in (toy_beir / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    assert len(held_out) == round(0.2 * 72) and not held_out & test_queries
    settings = json.loads((tmp_path / "export" / "search.json").read_text())
    assert settings["tuned_on"]["queries"] == len(held_out) and settings["tuned_on"]["split"] == "train"
    mined = (tmp_path / "stage2" / "negatives.jsonl").read_text().splitlines()  # stage 2's training queries
    trained = {json.loads(line)["query_id"] for line in mined}
    assert trained and not trained & held_out
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0
    assert "indexed 0, unchanged 24" in again.output  # nothing retrained, re-exported or re-embedded
    assert "reusing what an earlier run built there" in again.output.splitlines()[0]
    commands = [line.strip() for line in again.output.splitlines() if line.startswith("  llmql")]
    assert [c.split()[0:2] for c in commands] == [
        ["llmql-search", '"aspirin'],
        ["llmql-eval", "--data"],
        ["llmql", "serve"],
    ]
    for command in commands[:2]:  # the printed commands work on what was built, as printed
        words = shlex.split(command)
        runner = {"llmql-search": search_main, "llmql-eval": eval_main}[words[0]]
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            result = CliRunner().invoke(runner, [*words[1:], "--runtime", "onnx"])
        finally:
            os.chdir(cwd)
        assert result.exit_code == 0, (command, result.output)


def test_server_backend_needs_a_url(toy_beir, tmp_path, monkeypatch):
    monkeypatch.delenv("LLMQL_OPENSEARCH_URL", raising=False)
    args = ["quickstart", "--data", str(toy_beir), "--workdir", str(tmp_path), "--backend", "opensearch"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "LLMQL_OPENSEARCH_URL" in result.output
    assert not (tmp_path / "stage1").exists()  # refused before any work


@pytest.mark.live
@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
def test_quickstart_on_a_real_server(engine, tiny_llama, toy_beir, tmp_path):
    url = server_url(engine)
    index = f"llmql-qs-{uuid.uuid4().hex[:8]}"
    args = ["quickstart", "--data", str(toy_beir), "--model", str(tiny_llama), "--workdir", str(tmp_path)]
    args += ["--corpus-docs", "10", "--budget", "0.2", "--runtime", "onnx", "--backend", engine, "--url", url]
    result = CliRunner().invoke(main, [*args, "--index", index])
    assert result.exit_code == 0, result.output
    assert f"sync into {engine} ({url}, index {index})" in result.output
    assert any(line.startswith("tuned ") for line in result.output.splitlines())
    assert (
        f'llmql-search "aspirin lowers the risk of stroke" --backend {engine} --url {url} --index {index}'
        in result.output
    )
    from llmql.connectors.registry import open_backend

    backend = open_backend(engine, url)
    try:
        assert backend.count(index) == 24  # the toy slice: every judged document plus others
    finally:
        backend.drop_index(index)


def test_the_slice_can_be_tuned_on_when_it_leaves_training_documents_out(tmp_path):
    """The real slice (1,000 of 5,183 abstracts) leaves out documents judged for training queries; tuning
    loads its train split, so that split may judge only the tuning queries (whose documents are kept)."""
    from llmql.plugin.quickstart import corpus_slice
    from llmql.train.data import load_beir

    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    docs = [f"d{i}" for i in range(40)]
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": f"text {d}"}) + "\n" for d in docs))
    queries = ["t1", "q1", "q2", "q3"]
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": f"about {q}"}) + "\n" for q in queries))
    header = "query-id\tcorpus-id\tscore\n"
    (data / "qrels" / "test.tsv").write_text(header + "t1\td0\t1\n")
    (data / "qrels" / "train.tsv").write_text(header + "q1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    sliced = corpus_slice(data, tmp_path / "slice", size=3, tuning={"q2"})
    tuning = load_beir(sliced, "train")
    assert set(tuning.qrels) == {"q2"} and "d2" in tuning.corpus and len(tuning.corpus) == 3
    assert set(load_beir(sliced, "test").qrels) == {"t1"}


def test_a_slice_for_a_share_of_the_test_queries_keeps_their_judged_documents(tmp_path):
    from llmql.plugin.quickstart import corpus_slice
    from llmql.train.data import load_beir

    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    docs = [f"d{i}" for i in range(60)]
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": f"text {d}"}) + "\n" for d in docs))
    tests = [f"t{i}" for i in range(6)]
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": f"about {q}"}) + "\n" for q in tests))
    header = "query-id\tcorpus-id\tscore\n"
    (data / "qrels" / "test.tsv").write_text(
        header + "".join(f"t{i}\td{2 * i}\t1\nt{i}\td{2 * i + 1}\t1\n" for i in range(6))
    )
    (data / "qrels" / "train.tsv").write_text(header)
    sliced = load_beir(corpus_slice(data, tmp_path / "slice", size=10, test_queries=2), "test")
    assert len(sliced.qrels) == 2  # two of the six test queries, every document they judge kept
    assert all(d in sliced.corpus for judged in sliced.qrels.values() for d in judged) and len(sliced.corpus) == 10
    again = load_beir(corpus_slice(data, tmp_path / "slice2", size=10, test_queries=2), "test")
    assert set(again.qrels) == set(sliced.qrels)  # seeded: the same share every time
