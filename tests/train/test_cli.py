from click.testing import CliRunner

from llmql.train.cli import main


def test_help_explains_options_with_defaults():
    result = CliRunner().invoke(main, ["ql", "--help"])
    assert result.exit_code == 0
    for text in ("--mask-prob", "default: 0.6", "--no-attention-stop", "--ql-loss-on", "--resume", "--max-steps"):
        assert text in result.output
    result = CliRunner().invoke(main, ["contrastive", "--help"])
    assert "default: 0.01" in result.output and "--group-size" in result.output


def test_bad_data_is_a_one_line_error(tmp_path, tiny_llama):
    data = tmp_path / "beir"
    data.mkdir()
    (data / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{oops\n')
    (data / "qrels").mkdir()
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\t1\n")
    result = CliRunner().invoke(
        main, ["ql", "--model", str(tiny_llama), "--data", str(data), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "corpus.jsonl:2: malformed JSON" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_unknown_model_name_is_explained(tmp_path, toy_beir):
    result = CliRunner().invoke(
        main, ["ql", "--model", "no-such-model", "--data", str(toy_beir), "--out", str(tmp_path)]
    )
    assert result.exit_code == 1 and "not a named model (gemma-3-270m, smollm2-135m)" in result.output
