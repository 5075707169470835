"""The sync machinery at scale: documents/s and peak memory syncing up to a million synthetic documents with a
tiny random model (2 layers, 32 wide), so that the model's cost does not hide the pipeline's (reading,
validation, tokenisation, batching, hashing, bulk writes, progress commits).

    eval "$(scripts/search-server env)"
    .venv/bin/python -m bench.sync_scale [--docs 1000000] [--engines embedded,opensearch] [--device auto]

Each engine runs in its own process, so its peak resident memory is its own: the figure reported as the sync's
own memory is that peak less the process's resident memory just before the sync started (interpreter, libraries
and model loaded). Writes bench/results/sync_scale.json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import memory_mib, reset_peak_memory, write_results


def write_corpus(path: Path, docs: int, words: int = 40, seed: int = 0) -> Path:
    """`docs` passages of `words` words from the tiny model's own vocabulary (about one token a word: the
    tokenizer is trained on it), so the figures are the pipeline's, not the toy model's attention over long
    rows of word pieces."""
    from tests.toydata import FILLER, TOPICS

    rng = random.Random(seed)
    vocabulary = FILLER + TOPICS
    with path.open("w") as handle:
        for i in range(docs):
            text = " ".join(rng.choices(vocabulary, k=words))
            handle.write(json.dumps({"_id": f"d{i:08d}", "title": f"doc {i}", "text": text}) + "\n")
    return path


def one_engine(engine: str, location: str, corpus: Path, model: Path, args) -> dict:
    """Runs in a child process: sync the corpus into `engine` once; time and memory."""
    from llmql.connectors.registry import open_backend
    from llmql.connectors.sync import SyncConfig, sync
    from llmql.export.runtime import load_encoder

    index = "llmql-sync-scale"
    open_backend(engine, location).drop_index(index)
    load_encoder(model, runtime=args.runtime, device=args.device)  # libraries and model in memory, as for sync
    reset_peak_memory()  # the peak below is then the sync's (and what it holds from before), not the loading's
    before = memory_mib()
    cfg = SyncConfig(
        corpus=str(corpus),
        model=str(model),
        backend=engine,
        url=location,
        index=index,
        batch_size=args.batch_size,
        encode_batch_size=args.encode_batch_size,
        max_padded_tokens=args.max_padded_tokens,
        runtime=args.runtime,
        device=args.device,
        failures_file=str(corpus.parent / f"failures-{engine}.jsonl"),
    )
    start = time.perf_counter()
    report = sync(cfg, progress=False)
    seconds = time.perf_counter() - start
    peak = memory_mib("VmHWM")  # this child's own peak (ru_maxrss would hold its parent's, if larger)
    count = open_backend(engine, location).count(index)
    if engine != "embedded":
        open_backend(engine, location).drop_index(index)
    return {
        "engine": engine,
        "docs": report.indexed,
        "count_after": count,
        "seconds": round(seconds, 1),
        "docs_per_s": round(report.indexed / seconds, 1),
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(peak, 1),
        "sync_own_mib": round(peak - before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--engines", default="embedded,opensearch")
    parser.add_argument("--batch-size", type=int, default=2000, help="documents per bulk write")
    parser.add_argument("--encode-batch-size", type=int, default=256)
    parser.add_argument("--max-padded-tokens", type=int, default=32768)
    parser.add_argument("--runtime", default="onnx", choices=["onnx", "torch", "auto"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", nargs=4, metavar=("ENGINE", "LOCATION", "CORPUS", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, location, corpus, model = args.child
        print(json.dumps(one_engine(engine, location, Path(corpus), Path(model), args)), flush=True)
        return

    import os

    from llmql.export.convert import ExportConfig, export_model
    from tests.conftest import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="llmql-sync-scale-"))
    start = time.perf_counter()
    corpus = write_corpus(work / "corpus.jsonl", args.docs)
    print(
        f"corpus: {args.docs} documents, {corpus.stat().st_size / 2**20:.0f} MiB, {time.perf_counter() - start:.0f} s"
    )
    model = export_model(ExportConfig(model=str(build_tiny_model(work / "tiny")), out=str(work / "export")))
    rows = []
    for engine in args.engines.split(","):
        location = str(work / "lancedb") if engine == "embedded" else os.environ.get(f"LLMQL_{engine.upper()}_URL")
        if not location:
            print(f"{engine}: LLMQL_{engine.upper()}_URL not set, skipped", flush=True)
            continue
        child = [sys.executable, "-m", "bench.sync_scale", *sys.argv[1:], "--child", engine, location, str(corpus)]
        out = subprocess.run([*child, str(model)], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    settings = {
        k: getattr(args, k) for k in ("docs", "batch_size", "encode_batch_size", "max_padded_tokens", "runtime")
    }
    write_results("sync_scale", {"settings": settings, "model": "tiny random Llama (2 layers, 32 wide)", "rows": rows})


if __name__ == "__main__":
    main()
