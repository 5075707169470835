"""Chunked sync on every backend: a document is the set of its passages (found by its best one, replaced and
deleted whole, never orphaned), and QL scores it by its best passage on both paths."""

import json
import uuid

import numpy as np
import pytest

from llmql.connectors.base import IndexMismatch
from llmql.connectors.corpus import CorpusFormat
from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync
from llmql.train.core.errors import LLMQLError

LONG = " ".join(f"the granite ridge study {i} shows basalt and kelp in lagoon water" for i in range(12))
DOCS = [
    {"_id": "long", "title": "Granite", "text": LONG, "lang": "en"},
    {"_id": "kelp", "title": "Kelp", "text": "kelp in lagoon", "lang": "fr"},
    {"_id": "amber", "title": "", "text": "amber resin", "lang": "en"},
]


def write(path, docs) -> str:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return str(path)


def stored_passages(backend, index: str) -> int:
    """Passages held by the engine itself (an orphan would be counted here)."""
    if backend.name == "embedded":
        return backend._table(index).count_rows()
    if backend.name == "memory":
        return sum(len(r.passages) for r in backend._index(index).docs.values())
    name = backend.resolve(index)
    stats = backend._request("GET", f"/{name}/_stats/docs", index=name)["indices"][name]["primaries"]["docs"]
    return int(stats["count"]) - backend.count(index)  # Lucene counts each nested passage as a document


@pytest.fixture
def chunked(backend_spec, tiny_export, tmp_path):
    name, location = backend_spec
    index = f"llmql-chunks-{uuid.uuid4().hex[:6]}"
    backend = open_backend(name, location)
    cfg = SyncConfig(
        corpus=write(tmp_path / "corpus.jsonl", DOCS),
        model=str(tiny_export),
        backend=name,
        url=location,
        index=index,
        runtime="onnx",
        chunk_tokens=16,
        chunk_overlap=4,
        end_states="fp16",
        corpus_format=CorpusFormat(keep_fields=("lang",)),
    )
    yield backend, index, cfg
    backend.drop_index(index)


def test_documents_are_found_by_their_best_passage_and_replaced_whole(chunked, tiny_export, tmp_path):
    from llmql.export.runtime import OnnxEncoder

    backend, index, cfg = chunked
    report = sync(cfg, progress=False)
    assert report.ok and report.chunking == "16/4" and report.split == 1 and report.cut == 0
    assert backend.count(index) == 3
    records = backend.fetch(index, ["long", "kelp"], with_vector=True, with_state=True)
    long = records["long"]
    assert len(long.passages) == report.passages - 2 > 3 and stored_passages(backend, index) == report.passages
    assert long.passages[0].start == 0 and long.passages[-1].end == len(LONG)
    assert all(p.end_states and p.vector is not None for p in long.passages)
    assert len(records["kelp"].passages) == 1

    query = OnnxEncoder.from_dir(tiny_export).encode_queries(["granite ridge basalt"])[0]
    hits = backend.knn(index, query, 3)
    assert sorted(h.id for h in hits) == ["amber", "kelp", "long"]  # documents, each once
    by_id = {h.id: h for h in hits}
    cosines = [float(np.dot(p.vector, query)) for p in long.passages]
    assert by_id["long"].score == pytest.approx(max(cosines), abs=1e-4)  # MaxP
    best = long.passages[int(np.argmax(cosines))]
    assert by_id["long"].passage == (best.start, best.end)
    assert by_id["long"].text == LONG  # the hit is the whole document
    assert [h.id for h in backend.knn(index, query, 3, {"lang": "en"})] == [h.id for h in hits if h.id != "kelp"]

    shorter = [{**DOCS[0], "text": "granite ridge only"}, *DOCS[1:]]  # the long document shrinks to one passage
    again = sync(
        SyncConfig(**{**cfg.__dict__, "corpus": write(tmp_path / "c2.jsonl", shorter), "incremental": True}),
        progress=False,
    )
    assert (again.indexed, again.unchanged) == (1, 2)
    backend.refresh(index)
    assert len(backend.fetch(index, ["long"])["long"].passages) == 1
    assert stored_passages(backend, index) == 3  # none of the old passages is left

    gone = sync(
        SyncConfig(
            **{
                **cfg.__dict__,
                "corpus": write(tmp_path / "c3.jsonl", DOCS[1:]),
                "incremental": True,
                "delete_missing": True,
            }
        ),
        progress=False,
    )
    assert gone.deleted == 1 and backend.count(index) == 2 and stored_passages(backend, index) == 2


def test_ql_scores_a_chunked_document_by_its_best_passage_on_both_paths(chunked, tiny_export):
    from llmql.export.runtime import load_ql_scorer
    from llmql.plugin.rerank import QLReranker
    from llmql.train.core.chunking import passage_parts

    backend, index, cfg = chunked
    assert sync(cfg, progress=False).ok
    scorer = load_ql_scorer(str(tiny_export), runtime="onnx")
    ids = ["long", "kelp", "amber"]
    cached = QLReranker(scorer, backend, index, "cached").rerank("basalt lagoon", ids)
    full = QLReranker(scorer, backend, index, "full").rerank("basalt lagoon", ids)
    long = backend.fetch(index, ["long"])["long"]
    parts = passage_parts(long.title, long.text, [(p.start, p.end) for p in long.passages])
    each = scorer.score("basalt lagoon", [t for _, t in parts], [h for h, _ in parts])
    assert full.scores["long"] == pytest.approx(float(each.max()), abs=1e-5)
    best = long.passages[int(each.argmax())]
    assert full.passages["long"] == (best.start, best.end)
    for i in ids:
        assert cached.scores[i] == pytest.approx(full.scores[i], abs=2e-2)  # fp16 states
    assert cached.path == "cached" and cached.passages["long"] == full.passages["long"]


def test_bad_chunk_settings_and_a_layout_change_are_refused_before_any_write(chunked):
    backend, index, cfg = chunked
    for bad, message in [
        ({"chunk_tokens": 100_000}, "larger than the model's passage window"),
        ({"chunk_overlap": 16}, "smaller than --chunk-tokens 16"),
    ]:
        with pytest.raises(LLMQLError, match=message):
            sync(SyncConfig(**{**cfg.__dict__, **bad}), progress=False)
        assert backend.resolve(index) is None  # nothing was created
    assert sync(
        SyncConfig(**{**cfg.__dict__, "chunk_tokens": None, "chunk_overlap": 0, "end_states": "none"}), progress=False
    ).ok  # an unchunked index
    before = backend.count(index)
    with pytest.raises(IndexMismatch, match="holds whole documents, not chunks of 16/4"):
        sync(cfg, progress=False)
    assert backend.count(index) == before


def test_the_command_line_chunks_and_refuses_bad_settings(tiny_export, tmp_path):
    from click.testing import CliRunner

    from llmql.connectors.cli import main as sync_cli

    corpus = write(tmp_path / "corpus.jsonl", DOCS)
    args = [corpus, "--model", str(tiny_export), "--url", str(tmp_path / "db"), "--runtime", "onnx", "--quiet"]
    runner = CliRunner()
    for bad, message in [
        (["--chunk-tokens", "100000"], "larger than the model's passage window"),
        (["--chunk-tokens", "8", "--chunk-overlap", "8"], "smaller than --chunk-tokens 8"),
    ]:
        out = runner.invoke(sync_cli, [*args, *bad])
        assert out.exit_code != 0 and message in out.output and "Traceback" not in out.output
    assert not (tmp_path / "db" / "llmql.lance").exists()  # nothing was created
    whole = runner.invoke(sync_cli, [*args, "--index", "whole"])
    assert whole.exit_code == 0 and "chunking" not in json.loads(whole.output.splitlines()[0])  # as before
    done = runner.invoke(sync_cli, [*args, "--chunk-overlap", "4"])  # implies --chunk, at the model's length
    assert done.exit_code == 0, done.output
    report = json.loads(done.output.splitlines()[0])
    assert report["chunking"].endswith("/4") and report["passages"] >= report["indexed"] == 3
