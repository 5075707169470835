"""Search, evaluation and the service refuse a model the index was not synced with, and never score cached
[E] states with another model; the CLIs answer bad options in one line."""

import json

import pytest
from click.testing import CliRunner

from llmql.connectors.base import IndexMismatch
from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.plugin.search import HybridSearcher, SearchConfig
from llmql.plugin.search_cli import search_main
from llmql.plugin.service import ServiceConfig, create_app
from llmql.train.core.identity import model_identity
from tests.conftest import build_tiny_model


@pytest.fixture(scope="module")
def embedded_index(ql_export, toy_beir, tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    sync(
        SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=str(root), index="docs", end_states="fp16"),
        progress=False,
    )
    return str(root)


def search_cli(*args):
    return CliRunner().invoke(search_main, list(args))


def test_dense_search_with_another_model_is_refused_naming_both(embedded_index, ql_export, other_export):
    result = search_cli("kelp", "--url", embedded_index, "--index", "docs", "--mode", "dense", "--model", other_export)
    ours, theirs = OnnxEncoder.from_dir(ql_export).identity, OnnxEncoder.from_dir(other_export).identity
    assert result.exit_code == 1 and ours in result.output and theirs in result.output
    assert "Traceback" not in result.output
    ok = search_cli("kelp", "--url", embedded_index, "--index", "docs", "--mode", "dense", "--model", ql_export)
    assert ok.exit_code == 0 and ok.output.count("\n") == 10


def test_service_refuses_to_start_with_another_model(embedded_index, other_export, ql_export, toy_beir):
    backend = open_backend("embedded", embedded_index)
    with pytest.raises(IndexMismatch, match="docs"):
        create_app(ServiceConfig(url=embedded_index, index="docs"), OnnxEncoder.from_dir(other_export), None, backend)
    sync(SyncConfig(corpus=str(toy_beir), model=str(other_export), url=embedded_index, index="other"), progress=False)
    with pytest.raises(IndexMismatch, match="other"):  # every allowed index is checked, not only the default
        create_app(
            ServiceConfig(url=embedded_index, index="docs", indexes=("other",)),
            OnnxEncoder.from_dir(ql_export),
            None,
            backend,
        )


def test_cached_states_are_never_scored_by_another_ql_model(embedded_index, ql_export, tiny_qwen2):
    from llmql.export.runtime import load_ql_scorer

    backend = open_backend("embedded", embedded_index)
    other = load_ql_scorer(str(tiny_qwen2))
    searcher = HybridSearcher(backend, "docs", None, other, SearchConfig(mode="bm25", rerank_depth=5))
    assert searcher.search("kelp study", k=5).ql_path == "full"
    with pytest.raises(IndexMismatch, match="cached"):
        HybridSearcher(backend, "docs", None, other, SearchConfig(mode="bm25", rerank_depth=5, ql_path="cached"))
    own = HybridSearcher(
        backend, "docs", None, OnnxQLScorer.from_dir(ql_export), SearchConfig(rerank_depth=5, mode="bm25")
    )
    assert own.search("kelp study", k=5).ql_path == "cached"


def test_retraining_into_the_same_folder_is_a_new_model(tmp_path, toy_beir):
    model = build_tiny_model(tmp_path / "model", "llama", seed=0)
    before = model_identity(model)
    cfg = SyncConfig(corpus=str(toy_beir), model=str(model), url=str(tmp_path / "db"), index="docs", incremental=True)
    assert sync(cfg, progress=False).indexed == 24
    build_tiny_model(model, "llama", seed=1)  # retrained: same path, other weights
    assert model_identity(model) != before
    with pytest.raises(IndexMismatch, match="use --recreate"):
        sync(cfg, progress=False)  # --incremental would otherwise keep every stale vector as "unchanged"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["", "--mode", "bm25"], "the query is empty"),
        (["kelp", "--mode", "bm25", "--filter", '"en"'], "a filter is a JSON object"),
        (["kelp", "--mode", "bm25", "--filter", '{"lang": []}'], "non-empty list"),
        (["kelp", "--mode", "bm25", "--k", "-5"], "-5 is not in the range"),
        (["kelp", "--mode", "bm25", "--k", "0"], "0 is not in the range"),
        (["kelp", "--mode", "bm25", "--index", "."], "index names start with"),
        (["kelp", "--mode", "bm25", "--index", ".."], "index names start with"),
    ],
)
def test_bad_search_options_are_one_line_errors(embedded_index, args, message):
    result = (
        search_cli(*args, "--url", embedded_index)
        if "--index" in args
        else search_cli(*args, "--url", embedded_index, "--index", "docs")
    )
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_warmup_that_is_neither_steps_nor_a_fraction_is_a_usage_error(tiny_llama, toy_beir, tmp_path):
    from llmql.train.cli import main as train_cli

    for value in ("1e-3", "abc", "1.5"):
        args = ["ql", "--model", str(tiny_llama), "--data", str(toy_beir), "--out", str(tmp_path / "o"), "--warmup"]
        result = CliRunner().invoke(train_cli, [*args, value, "--max-steps", "1"])
        if value == "1e-3":
            assert result.exit_code == 0, result.output  # a fraction written in exponent form is a fraction
            continue
        assert result.exit_code == 2 and "--warmup" in result.output and "Traceback" not in result.output


def test_service_rejects_unknown_fields_and_blank_texts(embedded_index, ql_export):
    from fastapi.testclient import TestClient

    backend = open_backend("embedded", embedded_index)
    client = TestClient(
        create_app(ServiceConfig(url=embedded_index, index="docs"), OnnxEncoder.from_dir(ql_export), None, backend)
    )
    typo = client.post("/search", json={"query": "kelp", "top_k": 3})
    assert typo.status_code == 422 and "top_k" in typo.text
    blank = client.post("/embed", json={"texts": ["kelp", "   "]})
    assert blank.status_code == 422 and "blank" in blank.text
    assert json.loads(client.get("/health").text)["indexes"] == ["docs"]


def test_rerank_by_ids_in_an_index_without_cached_states_reads_the_documents(ql_export, toy_beir, tmp_path):
    from fastapi.testclient import TestClient

    sync(SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=str(tmp_path), index="plain"), progress=False)
    backend = open_backend("embedded", str(tmp_path))
    app = create_app(ServiceConfig(url=str(tmp_path), index="plain"), None, OnnxQLScorer.from_dir(ql_export), backend)
    client = TestClient(app)
    ok = client.post("/rerank", json={"query": "kelp", "ids": ["d10", "d3"]})
    assert ok.status_code == 200 and ok.json()["path"] == "full"  # no states stored: re-reads the documents
