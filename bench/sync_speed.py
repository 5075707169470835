"""Sync throughput: documents/s into the embedded engine, OpenSearch and Elasticsearch, against encoding alone,
with the same encoder, corpus slice and batch size, in one run. The engine's cost is sync time over encode time.

    eval "$(scripts/search-server env)"
    .venv/bin/python -m bench.sync_speed [--docs 512] [--model smollm2-135m] [--runtime torch]

Servers not configured are skipped (and said so). Writes bench/results/sync_speed.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import SHARED_DATA, engine_targets, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--model", default="smollm2-135m", help="model directory, export, or named model")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx", "auto"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args()

    from llmql.connectors.corpus import BadLine, read_corpus
    from llmql.export.runtime import load_encoder

    work = Path(tempfile.mkdtemp(prefix="llmql-sync-speed-"))
    corpus = work / "corpus.jsonl"
    with (SHARED_DATA / "scifact" / "corpus.jsonl").open() as src, corpus.open("w") as dst:
        for i, line in enumerate(src):
            if i >= args.docs:
                break
            dst.write(line)
    docs = [d for d in read_corpus(corpus) if not isinstance(d, BadLine)]
    encoder = load_encoder(args.model, runtime=args.runtime, device=args.device)

    encoder.encode_passages([d.text for d in docs[:8]], [d.title for d in docs[:8]])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(docs), args.batch_size):
        batch = docs[i : i + args.batch_size]
        encoder.encode_passages([d.text for d in batch], [d.title for d in batch])
    encode_seconds = time.perf_counter() - start
    rows = [{"target": "encoding alone", "seconds": encode_seconds, "docs_per_s": len(docs) / encode_seconds}]
    print(json.dumps(rows[-1]), flush=True)

    for engine, location in engine_targets(work / "lancedb"):
        seconds = timed_sync(engine, location, corpus, args, work, len(docs))
        rows.append(
            {
                "target": engine,
                "seconds": seconds,
                "docs_per_s": len(docs) / seconds,
                "overhead_over_encoding": seconds / encode_seconds - 1,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    write_results("sync_speed", {"settings": vars(args), "documents": len(docs), "rows": rows})


def timed_sync(engine: str, location: str, corpus: Path, args: argparse.Namespace, work: Path, n_docs: int) -> float:
    """Seconds of one `llmql-sync` of `corpus` into a fresh index on `engine`, which is dropped afterwards."""
    from llmql.connectors.registry import open_backend
    from llmql.connectors.sync import SyncConfig, sync

    index = "llmql-sync-speed"
    open_backend(engine, location).drop_index(index)
    config = SyncConfig(
        corpus=str(corpus),
        model=args.model,
        device=args.device,
        backend=engine,
        url=location,
        index=index,
        batch_size=args.batch_size,
        runtime=args.runtime,
        failures_file=str(work / f"{engine}-failures.jsonl"),
    )
    report = sync(config, progress=False)
    assert report.ok and report.indexed == n_docs, report
    open_backend(engine, location).drop_index(index)
    return report.seconds


if __name__ == "__main__":
    main()
