"""Corpus formats for sync: BEIR JSONL, JSONL with chosen fields, TSV with a header; bad lines are named."""

from llmql.connectors.corpus import BadLine, CorpusFormat, SourceDoc, content_hash, read_corpus


def test_jsonl_with_chosen_fields_and_metadata(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"doc": 7, "body": "kelp forests", "heading": "Kelp", "year": 2020, "tags": ["x"]}\n')
    (doc,) = read_corpus(path, CorpusFormat("doc", "body", "heading", ("year", "tags")))
    assert doc == SourceDoc(1, "7", "Kelp", "kelp forests", {"year": 2020})  # lists are not filterable metadata


def test_tsv_with_header(tmp_path):
    path = tmp_path / "docs.tsv"
    path.write_text("id\ttitle\ttext\na1\tKelp\tkelp forests grow\na2\tRock\n\na3\t\tgranite ridge\n")
    items = list(read_corpus(path, CorpusFormat("id", "text", "title")))
    assert [i.id for i in items if isinstance(i, SourceDoc)] == ["a1", "a3"]
    bad = [i for i in items if isinstance(i, BadLine)]
    assert bad == [BadLine(3, "expected 3 tab-separated columns, got 2")]


def test_content_hash_changes_with_text_and_model():
    doc = SourceDoc(1, "a", "T", "text")
    assert content_hash(doc, "m1") == content_hash(SourceDoc(9, "a", "T", "text"), "m1")  # the line does not count
    assert content_hash(doc, "m1") != content_hash(SourceDoc(1, "a", "T", "text!"), "m1")
    assert content_hash(doc, "m1") != content_hash(doc, "m2")
