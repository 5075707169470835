"""Sharded sync: one process against N processes under torchrun, same corpus, same model, one run.

    .venv/bin/python -m bench.sync_shards [--docs 50000] [--processes 2] [--model EXPORT --corpus CORPUS]

Without --model a tiny random model is exported and a synthetic corpus written (the pipeline's own scaling);
with --model (an llmql-export or model directory) and --corpus (a BEIR folder or JSONL, --docs lines of it)
the model's. Every run syncs into a fresh embedded index; documents/s counts wall time from launch to exit
(start-up included), and the sync's own seconds as the slowest rank reports them. Writes
bench/results/sync_shards.json (sync_shards_model.json with --model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import write_results

BIN = Path(sys.executable).parent


def run_sync(corpus: Path, model: str, processes: int, work: Path, args) -> dict:
    index_dir = work / f"index-{processes}"
    shutil.rmtree(index_dir, ignore_errors=True)
    options = [str(corpus), "--model", model, "--url", str(index_dir), "--runtime", args.runtime, "--quiet"]
    options += ["--device", args.device, "--batch-size", str(args.batch_size)]
    if processes == 1:
        command = [str(BIN / "llmql-sync"), *options]
    else:
        command = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(processes)]
        command += ["-m", "llmql.connectors.cli", *options]
    env = {**os.environ, "LLMQL_CACHE": str(work / "cache")}
    start = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    wall = time.perf_counter() - start
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    docs = sum(r["indexed"] for r in reports)
    return {
        "processes": processes,
        "docs": docs,
        "wall_s": round(wall, 1),
        "sync_s": max(r["seconds"] for r in reports),
        "docs_per_s_wall": round(docs / wall, 1),
        "docs_per_s_sync": round(docs / max(r["seconds"] for r in reports), 1),
    }


def take(corpus: str, docs: int, out: Path) -> Path:
    from llmql.connectors.corpus import corpus_file

    with corpus_file(corpus).open() as source, out.open("w") as target:
        target.writelines(itertools.islice(source, docs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--model", default=None, help="export or model directory (default: a tiny random model)")
    parser.add_argument("--corpus", default=None, help="BEIR folder or JSONL (default: synthetic)")
    parser.add_argument("--batch-size", type=int, default=256, help="documents per bulk write")
    parser.add_argument("--runtime", default="onnx", choices=["onnx", "torch", "auto"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmql-sync-shards-"))
    if args.model:
        model, corpus = args.model, take(args.corpus, args.docs, work / "corpus.jsonl")
    else:
        from bench.sync_scale import write_corpus
        from llmql.export.convert import ExportConfig, export_model
        from tests.conftest import build_tiny_model

        model = str(export_model(ExportConfig(model=str(build_tiny_model(work / "tiny")), out=str(work / "export"))))
        corpus = write_corpus(work / "corpus.jsonl", args.docs)
    rows = []
    for _ in range(args.repeats):
        for processes in (1, args.processes):
            rows.append(run_sync(corpus, model, processes, work, args))
            print(json.dumps(rows[-1]), flush=True)
    one = [r["docs_per_s_wall"] for r in rows if r["processes"] == 1]
    many = [r["docs_per_s_wall"] for r in rows if r["processes"] == args.processes]
    ratio = round(sorted(many)[len(many) // 2] / sorted(one)[len(one) // 2], 2)
    print(f"{args.processes} processes / 1 process (median docs/s, wall): {ratio}x")
    settings = {k: getattr(args, k) for k in ("docs", "processes", "batch_size", "runtime", "device", "repeats")}
    settings.update(model=args.model or "tiny random Llama (2 layers, 32 wide)", corpus=args.corpus or "synthetic")
    write_results(
        "sync_shards_model" if args.model else "sync_shards",
        {"settings": settings, "rows": rows, "ratio_wall": ratio, "cpus": os.cpu_count()},
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
