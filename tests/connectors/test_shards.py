"""Sharded sync: the id partition, refusals without a launcher, and two processes under torchrun on every backend
(exactly the corpus, vectors equal to one process, one rank SIGKILLed midway and resumed, the alias swapped once)."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
from click.testing import CliRunner

from llmql.connectors.cli import main as sync_cli
from llmql.connectors.registry import open_backend
from llmql.connectors.shards import Shard, launcher_shard, parse_shard, shard_group, shard_of
from llmql.connectors.sync import SyncConfig, state_path, sync
from llmql.train.core.errors import LLMQLError
from tests.toydata import big_corpus

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


@pytest.mark.parametrize("count", range(1, 8))
def test_every_id_is_in_exactly_one_shard(count):
    ids = [f"doc{i}" for i in range(700)] + ["", "ü", "a/b", "x" * 300]
    owners = {i: [s for s in range(count) if Shard(s, count).owns(i)] for i in ids}
    assert all(len(o) == 1 for o in owners.values())
    sizes = [sum(o == [s] for o in owners.values()) for s in range(count)]
    assert min(sizes) > len(ids) / count * 0.7  # a hash, not a constant: the shares are near equal
    assert all(shard_of(i, count) == owners[i][0] for i in ids)  # the same answer on every call


def test_shard_specs_and_the_launcher(monkeypatch):
    assert parse_shard("2/3") == Shard(2, 3) and str(parse_shard(" 0 / 1 ")) == "0/1"
    for bad in ("3/3", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launcher_shard() is None and shard_group(None).shard == Shard()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert launcher_shard() == Shard(3, 4)
    with pytest.raises(LLMQLError, match="disagrees with the launcher"):
        shard_group("1/4")


def test_whole_index_steps_need_a_launcher(tiny_export, tmp_path):
    corpus = big_corpus(tmp_path / "corpus.jsonl", 20)
    location = tmp_path / "index"
    for flag in ("--recreate", "--delete-missing", "--alias=a"):
        args = [str(corpus), "--model", str(tiny_export), "--url", str(location), "--shard", "0/2", flag, "--quiet"]
        result = CliRunner().invoke(sync_cli, args)
        assert result.exit_code == 1 and "torchrun" in result.output and flag.split("=")[0] in result.output
    assert not location.exists()  # refused before anything was written
    result = CliRunner().invoke(sync_cli, [str(corpus), "--model", str(tiny_export), "--shard", "2/2"])
    assert result.exit_code == 2 and "I must be 0 to N-1" in result.output


def test_shards_run_one_by_one_give_the_one_process_index(backend_spec, tiny_export, tmp_path):
    corpus = big_corpus(tmp_path / "corpus.jsonl", 60)
    name, location = backend_spec
    backend = open_backend(name, location)
    whole, sharded = f"llmql-whole-{uuid.uuid4().hex[:6]}", f"llmql-sharded-{uuid.uuid4().hex[:6]}"
    common = dict(corpus=str(corpus), model=str(tiny_export), backend=name, url=location, batch_size=8)
    try:
        sync(SyncConfig(index=whole, runtime="onnx", **common), progress=False)
        counts = [
            sync(SyncConfig(index=sharded, shard=f"{i}/3", runtime="onnx", **common), progress=False).indexed
            for i in range(3)
        ]
        backend.refresh(sharded)
        assert sum(counts) == 60 and min(counts) > 0
        assert_same_documents(backend, whole, sharded)
    finally:
        backend.drop_index(whole)
        backend.drop_index(sharded)


def assert_same_documents(backend, expected: str, actual: str) -> None:
    ids = sorted(i for i, _ in backend.content_hashes(expected))
    assert sorted(i for i, _ in backend.content_hashes(actual)) == ids  # each id once: ids are unique keys
    assert backend.count(actual) == len(ids)
    want = backend.fetch(expected, ids, with_vector=True)
    got = backend.fetch(actual, ids, with_vector=True)
    for i in ids:
        np.testing.assert_allclose(got[i].vector, want[i].vector, atol=1e-5)
        assert got[i].content_hash == want[i].content_hash


def launch(args: list[str], cache: Path) -> subprocess.Popen:
    env = {**os.environ, "LLMQL_CACHE": str(cache)}
    command = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "llmql.connectors.cli", *args, "--quiet"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "llmql.connectors.cli" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
def test_two_processes_killed_and_resumed_end_as_one_process(backend_spec, tiny_export, tmp_path, monkeypatch):
    """An alias served by a one-process build; a torchrun rebuild whose rank 1 is SIGKILLed midway leaves the
    alias where it was; resumed, it ends with the same documents and vectors, the alias swapped once."""
    name, location = backend_spec
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLMQL_CACHE", str(cache))
    corpus = big_corpus(tmp_path / "corpus.jsonl", 600)
    alias = f"llmql-shard-{uuid.uuid4().hex[:6]}"
    backend = open_backend(name, location)
    common = dict(corpus=str(corpus), model=str(tiny_export), backend=name, url=location, alias=alias)
    first = sync(SyncConfig(batch_size=8, runtime="onnx", **common), progress=False).index
    args = [str(corpus), "--model", str(tiny_export), "--backend", name, "--url", location, "--alias", alias]
    args += ["--batch-size", "4", "--runtime", "onnx"]
    progress = state_path(SyncConfig(**common), Shard(1, 2))
    try:
        launcher = launch(args, cache)
        committed = wait_then_kill_rank_1(launcher, progress)
        _, err = launcher.communicate(timeout=120)
        assert launcher.returncode != 0, err
        assert 0 < committed < 600 and backend.resolve(alias) == first  # no swap before every shard is done
        resumed = launch([*args, "--resume"], cache)
        out, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
        reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert sorted(r["shard"] for r in reports) == ["0/2", "1/2"]
        second = backend.resolve(alias)
        assert second not in (None, first) and {r["index"] for r in reports} == {second}
        assert backend.resolve(first) is None  # the old generation was dropped, once
        generation = backend.index_info(second).name
        assert_same_documents_across(name, location, common, generation)
        assert not any((cache / "sync").glob("*.json"))  # every shard's progress removed after the swap
    finally:
        for index in (backend.resolve(alias), first):
            if index:
                backend.drop_index(index)


def wait_then_kill_rank_1(launcher: subprocess.Popen, progress: Path) -> int:
    deadline = time.time() + 180
    while time.time() < deadline:
        if progress.is_file() and json.loads(progress.read_text())["committed_line"] >= 120:
            worker = rank_process(launcher, 1)
            assert worker is not None
            worker.kill()
            return json.loads(progress.read_text())["committed_line"]
        assert launcher.poll() is None, launcher.communicate()
        time.sleep(0.02)
    raise AssertionError("rank 1 made no progress")


def assert_same_documents_across(name: str, location: str, common: dict, generation: str) -> None:
    """The torchrun-built generation holds what a one-process sync of the same corpus holds."""
    backend = open_backend(name, location)
    reference = f"llmql-ref-{uuid.uuid4().hex[:6]}"
    try:
        cfg = {**common, "alias": None, "index": reference}
        sync(SyncConfig(batch_size=8, runtime="onnx", **cfg), progress=False)
        assert_same_documents(backend, reference, generation)
    finally:
        backend.drop_index(reference)
