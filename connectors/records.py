"""How a sync turns corpus documents into the records it writes: what changed, tokenised once, then encoded.

Two steps, so that the sync can run them as a pipeline: `tokenize` (host work: content hashes, which documents
changed, passage spans, token rows) runs on a background thread ahead of the model, and `encode` (model work:
vectors, and [E] states with a QL cache, from the same padded batches) runs on the device. Chunked, each
document's passages are encoded in the same calls and travel inside its one record.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmql.connectors.base import Passage, Record
from llmql.connectors.corpus import SourceDoc, content_hash, written_as
from llmql.train.core.chunking import Chunking, passage_parts
from llmql.train.core.device import BatchSizes
from llmql.train.core.text_encoder import encode_documents


@dataclass
class Tokenized:
    """One engine batch ready for the model: the documents to write and their passages' token rows."""

    docs: list[SourceDoc]
    hashes: dict[str, str]
    spans: list[list[tuple[int, int]]] | None  # chunked: each document's passage spans
    rows: list[list[int]]  # one per passage (per document when not chunked)

    @property
    def line_of(self) -> dict[str, int]:
        return {d.id: d.line for d in self.docs}


@dataclass
class Counts:
    """What the tokenising step found, for the sync's report."""

    unchanged: int = 0
    cut: int = 0  # documents longer than the passage length (cut, when not chunked)
    passages: int = 0
    split: int = 0  # documents that became more than one passage


class DocumentEncoder:
    def __init__(
        self,
        encoder,
        ql,
        sizes: BatchSizes,
        chunking: Chunking | None = None,
        incremental: bool = False,
        ql_format: str = "fp16",
    ):
        self.encoder, self.ql, self.sizes, self.chunking = encoder, ql, sizes, chunking
        self.incremental, self.ql_format = incremental, ql_format
        self.counts = Counts()
        states = ql_format if ql is not None else "none"
        self.stored_as = written_as(encoder.identity, states, None if chunking is None else str(chunking))

    def tokenize(self, batches: list[list[SourceDoc]], existing: dict[str, str]) -> list[Tokenized]:
        """Each batch's documents that changed (by content hash, with --incremental), as token rows; the batches
        are tokenised in one call (the tokenizer's threads are balanced over a few hundred texts, not over a
        few dozen)."""
        todos, hashes, parts, spans = [], [], [], []
        for docs in batches:
            hashed = {d.id: content_hash(d, self.stored_as) for d in docs}
            todo = [d for d in docs if not (self.incremental and existing.get(d.id) == hashed[d.id])]
            self.counts.unchanged += len(docs) - len(todo)
            todos.append(todo)
            hashes.append(hashed)
            spans.append(self._spans(todo))
            parts.append(self._parts(todo, spans[-1]))
        every = [p for batch in parts for p in batch]
        rows, cut = self.encoder.tokenizer.passages_counting_cuts([t for t, _ in every], [x for _, x in every])
        self.counts.cut += cut
        out, first = [], 0
        for todo, hashed, doc_spans, batch in zip(todos, hashes, spans, parts, strict=True):
            out.append(Tokenized(todo, hashed, doc_spans, rows[first : first + len(batch)]))
            first += len(batch)
        return out

    def _spans(self, docs: list[SourceDoc]) -> list[list[tuple[int, int]]] | None:
        """Chunked: each document's passage spans."""
        if self.chunking is None:
            return None
        tokenizer = self.encoder.tokenizer
        spans = tokenizer.chunk_spans([d.title for d in docs], [d.text for d in docs], self.chunking)
        self.counts.split += sum(len(s) > 1 for s in spans)
        return spans

    def _parts(self, docs: list[SourceDoc], spans) -> list[tuple[str, str]]:
        """(title, text) of each passage to encode: the documents, or their passages when chunked."""
        if spans is None:
            return [(d.title, d.text) for d in docs]
        parts = [p for d, s in zip(docs, spans, strict=True) for p in passage_parts(d.title, d.text, s)]
        self.counts.passages += len(parts)
        return parts

    def encode(self, work: Tokenized) -> list[Record]:
        """Records with their vectors (and packed [E] states with a QL cache)."""
        if not work.docs:
            return []
        vectors, states = encode_documents(self.encoder, self.ql, work.rows, self.sizes.rows, self.sizes.padded_tokens)
        blobs = None
        if states is not None:
            from llmql.connectors.state_blobs import pack

            blobs = pack(states, self.ql_format)
        if work.spans is None:
            return [
                Record(d.id, d.title, d.text, vectors[i], work.hashes[d.id], blobs[i] if blobs else None, d.fields)
                for i, d in enumerate(work.docs)
            ]
        records, first = [], 0
        for d, doc_spans in zip(work.docs, work.spans, strict=True):
            passages = tuple(
                Passage(a, b, vectors[first + j], blobs[first + j] if blobs else None)
                for j, (a, b) in enumerate(doc_spans)
            )
            records.append(Record(d.id, d.title, d.text, None, work.hashes[d.id], None, d.fields, passages))
            first += len(doc_spans)
        return records
