"""`llmql serve` under concurrent load: /embed requests/s with p50/p95 at several concurrencies, batching on and
off, and BM25-only /search latency while 32 clients keep the model busy, in one run against real server
processes on loopback.

    .venv/bin/python -m bench.serve_load [--model smollm2-135m] [--seconds 15] [--device auto]
    .venv/bin/python -m bench.serve_load --soak 500 --seconds 60   # load that does not end (serve_soak.json)
    .venv/bin/python -m bench.serve_load --soak 500 --seconds 60 --client-cpus 1   # clients off the server's core
    .venv/bin/python -m bench.serve_load --soak 500 --seconds 60 --client-cpus 1 --honour-retry-after

The index holds the first 300 SciFact abstracts, synced with the same model. Writes bench/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.common import SHARED_DATA, memory_mib, start_service, write_results

QUERIES = [
    "aspirin lowers the risk of stroke",
    "vitamin D deficiency in elderly patients",
    "gene expression in breast cancer cells",
    "antibiotic resistance spreads through plasmids",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(args, index_dir: Path, batching: bool, cpus: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    arguments = ["--url", str(index_dir), "--index", "docs", "--model", args.model, "--runtime", args.runtime]
    arguments += ["--device", args.device] + ([] if batching else ["--no-batching"])
    return start_service(arguments, cpus=cpus)


def load(url: str, path: str, body_of, concurrency: int, seconds: float) -> dict:
    """`concurrency` clients send requests back to back for `seconds`; latencies of the 200s, and the rest."""
    import httpx

    latencies: list[float] = []
    refused = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(worker: int) -> None:
        with httpx.Client(timeout=120) as http:
            i = worker
            while time.monotonic() < stop:
                start = time.perf_counter()
                response = http.post(f"{url}{path}", json=body_of(i))
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        refused[0] += 1
                i += concurrency

    threads = [threading.Thread(target=client, args=(w,)) for w in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies) or [float("nan")]
    return {
        "concurrency": concurrency,
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
        "ok": len(latencies),
        "refused": refused[0],
    }


def bm25_under_load(url: str, seconds: float) -> dict:
    """BM25-only search latency from one client while 32 /embed clients keep the model queue full."""
    background = threading.Thread(target=load, args=(url, "/embed", embed_body, 32, seconds))
    background.start()
    time.sleep(min(2.0, seconds / 4))
    measured = load(url, "/search", lambda i: {"query": QUERIES[i % 4], "mode": "bm25", "k": 10}, 1, seconds / 2)
    background.join()
    return measured


def soak(
    url: str,
    pid: int,
    clients: int,
    seconds: float,
    split: tuple[set[int], set[int]] | None = None,
    honour_retry_after: bool = False,
) -> dict:
    """`clients` /embed clients for `seconds` (from client processes) while one prober times /health every 50 ms;
    the server's resident memory after a warm-up and after the run. With `split` (the server's cores, the
    clients' cores) the client processes run on theirs only, as clients on other machines would, and the prober
    beside the server, as a health check on its host would."""
    from bench.host_path_load import load as many

    many(url, 8, 5.0)  # warm-up: the model, the queue and the thread pool at work
    warm = memory_mib(pid=pid)
    health: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        import httpx

        if split:
            os.sched_setaffinity(0, split[0])  # this thread only (Linux)

        with httpx.Client(timeout=30) as http:
            while not stop.wait(0.05):
                start = time.perf_counter()
                ok = http.get(f"{url}/health").status_code == 200
                health.append((time.perf_counter() - start) if ok else float("inf"))

    prober = threading.Thread(target=probe)
    prober.start()
    if split:
        os.sched_setaffinity(0, split[1])  # this thread, so the client processes it starts inherit it
    loaded = many(url, clients, seconds, honour_retry_after=honour_retry_after)
    stop.set()
    prober.join()
    after = memory_mib(pid=pid)
    ordered = sorted(health)
    return {
        **loaded,
        "health_requests": len(ordered),
        "health_p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
        **{f"health_p{q}_ms": round(1000 * ordered[int(q / 100 * (len(ordered) - 1))], 1) for q in (90, 95, 99)},
        "health_max_ms": round(1000 * ordered[-1], 1),
        "health_over_100ms": sum(1 for x in ordered if x > 0.1),
        "rss_warm_mib": round(warm, 1),
        "rss_after_mib": round(after, 1),
        "rss_ratio": round(after / warm, 3),
    }


def embed_body(i: int) -> dict:
    return {"texts": [f"{QUERIES[i % 4]} ({i})"]}


def build_index(args, work: Path) -> Path:
    from llmql.connectors.sync import SyncConfig, sync

    corpus = work / "corpus.jsonl"
    with (SHARED_DATA / "scifact" / "corpus.jsonl").open() as src:
        corpus.write_text("".join(line for _, line in zip(range(300), src, strict=False)))
    cfg = SyncConfig(corpus=str(corpus), model=args.model, url=str(work / "index"), index="docs")
    sync(SyncConfig(**{**cfg.__dict__, "runtime": args.runtime, "device": args.device}), progress=False)
    return work / "index"


def cpu_split(client_cpus: str) -> tuple[set[int], set[int]] | None:
    """(the server's cores, the clients' cores) from a list such as "1" or "2,3"; None for no split."""
    if not client_cpus:
        return None
    clients, usable = {int(c) for c in client_cpus.split(",")}, os.sched_getaffinity(0)
    server = usable - clients
    if not server or not clients <= usable:
        raise SystemExit(f"--client-cpus {client_cpus}: name cores of {sorted(usable)} and leave the server one")
    return server, clients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--runtime", default="auto", choices=["auto", "onnx", "torch"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=15.0, help="per measurement")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--soak",
        type=int,
        default=0,
        metavar="CLIENTS",
        help="instead: CLIENTS /embed clients for --seconds against one server (500 and 60 for the soak run): "
        "statuses, 503s without Retry-After, /health p99 and resident memory before and after",
    )
    parser.add_argument(
        "--client-cpus",
        default="",
        metavar="LIST",
        help="with --soak: run the clients on these cores (e.g. 1) and the server on the others, so that the "
        "clients do not take the server's cores (default: all share every core)",
    )
    parser.add_argument(
        "--honour-retry-after",
        action="store_true",
        help="with --soak: clients wait as a 503's Retry-After says before sending again, as well-behaved clients "
        "do (default: they send again at once, the worst case)",
    )
    args = parser.parse_args()
    if args.soak:
        soak_run(args)
    else:
        load_runs(args)


def soak_run(args: argparse.Namespace) -> None:
    """--soak: one batching server under CLIENTS /embed clients that never stop sending."""
    split = cpu_split(args.client_cpus)
    index_dir = build_index(args, Path(tempfile.mkdtemp(prefix="llmql-serve-soak-")))
    process, url = serve(args, index_dir, batching=True, cpus=split[0] if split else None)
    try:
        measured = soak(url, process.pid, args.soak, args.seconds, split, args.honour_retry_after)
        row = {
            "clients": args.soak,
            "seconds": args.seconds,
            "client_cpus": args.client_cpus,
            "honour_retry_after": args.honour_retry_after,
            **measured,
        }
    finally:
        process.terminate()
        process.wait(30)
    print(json.dumps(row), flush=True)
    # the shared-core run's file is kept; well-behaved clients' run beside the worst case
    name = ("serve_soak_split" if split else "serve_soak") + ("_polite" if args.honour_retry_after else "")
    write_results(name, {"settings": vars(args), "soak": row})


def load_runs(args: argparse.Namespace) -> None:
    """/embed at each --concurrency, and BM25 searches under /embed load, with and without the batcher."""
    index_dir = build_index(args, Path(tempfile.mkdtemp(prefix="llmql-serve-load-")))
    rows = []
    for batching in (True, False):
        process, url = serve(args, index_dir, batching)
        try:
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                row = {"batching": batching, "endpoint": "/embed"}
                rows.append({**row, **load(url, "/embed", embed_body, concurrency, args.seconds)})
                print(json.dumps(rows[-1]), flush=True)
            row = {"batching": batching, "endpoint": "/search bm25 under /embed load"}
            rows.append({**row, **bm25_under_load(url, args.seconds)})
            print(json.dumps(rows[-1]), flush=True)
        finally:
            process.terminate()
            process.wait(30)
    write_results("serve_load", {"settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
