"""The sync's tokenising step: engine batches tokenised together give what each gives alone."""

from __future__ import annotations

import pytest

from llmql.connectors.corpus import SourceDoc, content_hash
from llmql.connectors.records import DocumentEncoder
from llmql.export.runtime import load_encoder
from llmql.train.core.chunking import check_chunking
from llmql.train.core.device import CPU_BATCHES


def _docs() -> list[SourceDoc]:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    return [
        SourceDoc(n + 1, f"d{n}", f"title {n}" if n % 3 else "", " ".join(words[: 1 + n % 8] * (1 + 9 * (n % 4))))
        for n in range(12)
    ]


@pytest.mark.parametrize("chunked", [False, True])
def test_batches_tokenised_together_equal_each_tokenised_alone(tiny_export, chunked):
    encoder = load_encoder(str(tiny_export), runtime="onnx", device="cpu")
    window = encoder.tokenizer.config.max_passage_tokens
    chunking = check_chunking(min(16, window), 4, window) if chunked else None
    docs = _docs()
    batches = [docs[0:3], [], docs[3:8], docs[8:12]]
    together = DocumentEncoder(encoder, None, CPU_BATCHES, chunking, incremental=True)
    alone = DocumentEncoder(encoder, None, CPU_BATCHES, chunking, incremental=True)
    existing = {d.id: content_hash(d, together.stored_as) for d in (docs[1], docs[9])}  # unchanged: skipped
    got = together.tokenize(batches, existing)
    want = [alone.tokenize([batch], existing)[0] for batch in batches]

    assert got == want  # the documents, hashes, passage spans and token rows of each batch
    assert together.counts == alone.counts
    assert together.counts.unchanged == 2 and [len(w.docs) for w in got] == [2, 0, 5, 3]
    if chunked:  # documents of several passages: each batch gets back exactly its own passages' rows
        assert together.counts.split > 0 and sum(len(w.rows) for w in got) > sum(len(w.docs) for w in got)
    else:
        assert together.counts.cut > 0  # long documents were cut, counted once
