"""The main job end to end on a tiny model and the toy collection: train, export, sync, evaluate; then reuse."""

from click.testing import CliRunner

from llmql.plugin.cli import main


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
    for row in ("bm25", "dense", "hybrid", "hybrid+ql"):
        assert any(line.startswith(row + " ") for line in first.output.splitlines()), row
    assert (tmp_path / "export" / "manifest.json").is_file() and (tmp_path / "eval" / "bm25.run").is_file()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0
    assert "indexed 0, unchanged 24" in again.output  # nothing retrained, re-exported or re-embedded
