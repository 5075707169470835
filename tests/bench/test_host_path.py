"""bench.host_path's CPU-side figures on the tiny model: the tokenisation ratios and the stub-model sync pairs
(what its GPU run reports must come out of these same functions)."""

import pytest

from bench.host_path import StubEncoder, stub_syncs, tokenization
from llmql.export.runtime import load_encoder


@pytest.fixture(scope="module")
def tokenizer(tiny_export):
    return load_encoder(str(tiny_export), device="cpu").tokenizer


def test_the_stub_model_syncs_every_document_in_alternating_rounds(tokenizer, toy_beir):
    figures = stub_syncs(toy_beir / "corpus.jsonl", tokenizer, pairs=2)
    documents = len((toy_beir / "corpus.jsonl").read_text().splitlines())
    assert figures["sync_stub_model_documents"] == documents
    assert len(figures["stub_over_tokenization_rounds"]) == len(figures["stub_batch512_over_tokenization_rounds"]) == 2
    assert figures["stub_over_tokenization"] > 0 and figures["tokenization_same_documents_per_s"] > 0


def test_the_stub_model_returns_unit_vectors_without_a_model(tokenizer):
    vectors = StubEncoder(tokenizer).encode_passages(["kelp fjord", "dune"], ["", "amber"])
    assert vectors.shape[0] == 2 and (vectors[:, 0] == 1.0).all() and (abs(vectors).sum(axis=1) == 1.0).all()


def test_tokenization_figures_name_both_ratios(tokenizer):
    figures = tokenization(tokenizer, ["kelp"] * 8, ["fjord dune amber"] * 8)
    assert figures["passages"] == 8 and figures["llmql_over_library"] > 0 and figures["ten_times_longer_cost"] > 0
