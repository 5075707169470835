import json

import pytest

from llmql.train.core.errors import DataError
from llmql.train.data import groups_from_qrels, load_beir, load_corpus, load_training_jsonl, write_training_jsonl
from tests.toydata import write_toy_beir


def test_toy_collection_loads(toy_beir):
    data = load_beir(toy_beir, "train")
    assert len(data.corpus) == 24 and len(data.qrels) == 72


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": \n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: malformed JSON"):
        load_corpus(path)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "\xff"}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: invalid UTF-8"):
        load_corpus(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "x"}', "missing '_id'"),
        ('{"_id": "d0", "text": "dup"}', "duplicate document id"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_corpus_lines(tmp_path, line, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "d0", "text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"corpus.jsonl:2: .*{message}"):
        load_corpus(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"corpus\.jsonl: file not found"):
        load_corpus(tmp_path / "corpus.jsonl")


def test_qrels_ids_must_exist(tmp_path):
    root = write_toy_beir(tmp_path / "beir")
    with (root / "qrels" / "train.tsv").open("a") as f:
        f.write("q0-0\tnope\t1\n")
    with pytest.raises(DataError, match="document id 'nope' is not in"):
        load_beir(root, "train")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nghost\td0\t1\n")
    with pytest.raises(DataError, match="query id 'ghost' is not in"):
        load_beir(root, "test")


def test_training_jsonl_round_trip_and_errors(tmp_path, toy_beir):
    from llmql.train.data import groups_from_qrels

    groups = groups_from_qrels(load_beir(toy_beir, "train"))[:3]
    path = tmp_path / "train.jsonl"
    write_training_jsonl(path, groups)
    assert load_training_jsonl(path) == groups
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "positive_passages": []}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: no positive_passages"):
        load_training_jsonl(bad)


def test_empty_documents_are_left_out_with_a_count_and_stay_judged(tmp_path, caplog):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d0", "text": "fine"}\n{"_id": "e1", "text": " ", "title": ""}\n{"_id": "e2", "text": ""}\n'
    )
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "fine?"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq1\te1\t1\n")
    data = load_beir(tmp_path, "test")
    assert list(data.corpus) == ["d0"] and data.qrels["q1"] == {"d0": 1, "e1": 1}
    assert "2 empty document(s) left out" in caplog.text
    assert [p.id for p in groups_from_qrels(data)[0].positives] == ["d0"]
