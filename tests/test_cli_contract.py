"""Every command's contract with its user: each option explains itself, a usage error exits 2 and a runtime
failure exits 1 with one line and no traceback, and a refusal leaves nothing behind (issue 37, defects 9-14)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from llmql.connectors.cli import main as sync_cli
from llmql.export.cli import main as export_cli
from llmql.plugin.cli import main as llmql_cli
from llmql.plugin.search_cli import eval_main, search_main
from llmql.train.cli import main as train_cli

ROOTS = {
    "llmql": llmql_cli,
    "llmql-train": train_cli,
    "llmql-export": export_cli,
    "llmql-sync": sync_cli,
    "llmql-search": search_main,
    "llmql-eval": eval_main,
}


def commands(command: click.Command, path: tuple[str, ...]):
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from commands(sub, (*path, name))
    else:
        yield path, command


EVERY = [(path, command) for name, root in ROOTS.items() for path, command in commands(root, (name,))]


@pytest.mark.parametrize(("path", "command"), EVERY, ids=[" ".join(p) for p, _ in EVERY])
def test_every_option_and_command_says_what_it_does(path, command):
    assert (command.help or "").strip(), f"{' '.join(path)} has no help"
    silent = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert not silent, f"{' '.join(path)}: options without help: {silent}"


@pytest.mark.parametrize(("path", "command"), EVERY, ids=[" ".join(p) for p, _ in EVERY])
def test_an_unknown_option_is_a_usage_error(path, command):
    result = CliRunner().invoke(command, ["--no-such-option"])
    assert result.exit_code == 2 and "No such option" in result.output


def run(tmp_path, command, args):
    """Exit code and output of a command run in an empty working folder; what it left there."""
    import os
    from pathlib import Path

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(command, args)
    finally:
        os.chdir(before)
    return result, sorted(str(p.relative_to(cwd)) for p in Path(cwd).rglob("*"))


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (train_cli, ["ql", "--model", "m", "--data", "{data}", "--out", "o", "--split", "nope"]),
        (train_cli, ["contrastive", "--model", "m", "--data", "{data}", "--out", "o", "--split", "nope"]),
        (train_cli, ["mine-negatives", "--data", "{data}", "--out", "o.jsonl", "--split", "nope"]),
        (eval_main, ["--data", "{data}", "--split", "nope", "--runs", "bm25"]),
        (llmql_cli, ["tune", "--data", "{data}", "--split", "nope", "--model", "m"]),
        (train_cli, ["ql", "--model", "m", "--data", "{empty}", "--out", "o", "--split", "nope"]),  # no qrels at all
    ],
)
def test_a_missing_split_is_the_same_usage_error_everywhere(toy_beir, tmp_path, command, args):
    (tmp_path / "empty").mkdir()
    words = [a.replace("{data}", str(toy_beir)).replace("{empty}", str(tmp_path / "empty")) for a in args]
    result, left = run(tmp_path, command, words)
    splits = "its splits: none" if "{empty}" in args else "its splits: test, train"
    assert result.exit_code == 2 and "has no split 'nope'" in result.output and splits in result.output
    assert left == []


@pytest.mark.parametrize(
    ("command", "args", "said"),
    [
        (train_cli, ["ql", "--model", "/nonexistent", "--data", "{data}", "--out", "o"], "no such model"),
        (train_cli, ["contrastive", "--model", "/nonexistent", "--data", "{data}", "--out", "o"], "no such model"),
        (
            train_cli,
            ["contrastive", "--model", "{model}", "--data", "{data}", "--out", "o", "--negatives", "{bad}"],
            "bad.jsonl",
        ),
        (llmql_cli, ["quickstart", "--data", "{empty}", "--workdir", "w"], "not a BEIR collection"),
        (search_main, ["q", "--backend", "memory", "--url", "{file}", "--mode", "bm25"], "is a file"),
        (sync_cli, ["{data}", "--model", "{model}", "--url", "{file}"], "is a file"),
        (search_main, ["q", "--backend", "embedded", "--url", ":memory:", "--mode", "bm25"], "':memory:'"),
    ],
)
def test_a_refusal_is_one_line_exit_1_and_leaves_nothing_behind(toy_beir, tiny_llama, tmp_path, command, args, said):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"query_id": "q", "query": \n')
    (tmp_path / "a-file").write_text("x")
    where = {"{data}": toy_beir, "{empty}": tmp_path / "empty", "{model}": tiny_llama}
    where |= {"{bad}": tmp_path / "bad.jsonl", "{file}": tmp_path / "a-file"}
    words = [str(where.get(a, a)) for a in args]
    result, left = run(tmp_path, command, words)
    assert result.exit_code == 1, result.output
    assert said in result.output and "Traceback" not in result.output
    assert left == [], left


def test_sync_refuses_an_in_process_location_that_would_keep_nothing(toy_beir, tiny_export, tmp_path):
    result, _ = run(
        tmp_path, sync_cli, [str(toy_beir), "--model", str(tiny_export), "--backend", "memory", "--url", ":memory:"]
    )
    assert result.exit_code == 2 and "keeps nothing" in result.output


def test_hold_out_says_when_it_keeps_a_file_and_refuses_one_drawn_otherwise(toy_beir, tmp_path):
    out = str(tmp_path / "held.txt")
    args = ["hold-out", "--data", str(toy_beir), "--out", out]
    first = CliRunner().invoke(train_cli, args)
    assert first.exit_code == 0 and first.output.startswith("14 training queries held out")
    again = CliRunner().invoke(train_cli, args)
    assert again.exit_code == 0 and again.output.startswith("kept the existing")
    other = CliRunner().invoke(train_cli, [*args, "--share", "0.9"])
    assert other.exit_code == 1 and "drawn share=0.2" in other.output
    (tmp_path / "garbage.txt").write_text("garbage-id\n")
    garbage = CliRunner().invoke(
        train_cli, ["hold-out", "--data", str(toy_beir), "--out", str(tmp_path / "garbage.txt")]
    )
    assert garbage.exit_code == 1 and "garbage-id" in garbage.output
