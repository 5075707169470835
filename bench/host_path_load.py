"""The load half of `bench.host_path`: one-query encodes through the model queue from many threads, and /embed
over HTTP against a real `llmql serve` process, from client processes (so the clients' Python does not share
the server's interpreter)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def summary(latencies: list[float], refused: int, wall: float, clients: int) -> dict:
    ordered = sorted(latencies) or [float("nan")]
    return {
        "clients": clients,
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * float(np.median(ordered)), 2),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
        "ok": len(latencies),
        "refused": refused,
    }


def batcher_rates(encoder, queries: list[str], clients: tuple[int, ...], seconds: float) -> dict:
    """Requests/s and latency of one-query encodes from `clients` threads through one `ModelBatcher`."""
    from llmql.plugin.batcher import ModelBatcher, Overloaded

    batcher = ModelBatcher(encoder, max_queue=max(clients) * 2)
    out = {}
    try:
        batcher.encode(queries[:1], "query")
        for count in clients:
            latencies, refused, stop = [], [0], time.monotonic() + seconds

            def client(worker: int, latencies=latencies, refused=refused, stop=stop, count=count) -> None:
                i = worker
                while time.monotonic() < stop:
                    start = time.perf_counter()
                    try:
                        batcher.encode([queries[i % len(queries)]], "query")
                        latencies.append(time.perf_counter() - start)
                    except Overloaded:
                        refused[0] += 1
                    i += count

            began = time.perf_counter()
            with ThreadPoolExecutor(count) as pool:
                list(pool.map(client, range(count)))
            out[f"threads_{count}"] = summary(latencies, refused[0], time.perf_counter() - began, count)
    finally:
        batcher.close()
    return out


def _client_process(
    url: str, path: str, threads: int, seconds: float, first: int, queue, honour_retry_after: bool = False
) -> None:
    """`threads` clients posting one-query requests to `path` back to back (after a 503, at once, or after its
    Retry-After if `honour_retry_after`); to `queue`: latencies of the 200s, the count of every status (a request
    that got none counted by its error's kind), and how many 503s came without Retry-After."""
    import collections

    import httpx

    latencies, statuses, bare_503, lock = [], collections.Counter(), [0], threading.Lock()
    stop = time.monotonic() + seconds

    def client(worker: int) -> None:
        with httpx.Client(timeout=60) as http:
            i = worker
            while time.monotonic() < stop:
                start = time.perf_counter()
                try:
                    response = http.post(f"{url}{path}", json={"texts": [f"aspirin lowers the risk of stroke ({i})"]})
                    status = response.status_code
                except httpx.HTTPError as err:  # refused, dropped or timed out: counted by kind, never lost
                    status = f"error {type(err).__name__}"
                with lock:
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(time.perf_counter() - start)
                    elif status == 503 and "retry-after" not in response.headers:
                        bare_503[0] += 1
                if honour_retry_after and status == 503 and "retry-after" in response.headers:
                    time.sleep(min(float(response.headers["retry-after"]), max(0.0, stop - time.monotonic())))
                i += 1000

    workers = [threading.Thread(target=client, args=(first + w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put((latencies, dict(statuses), bare_503[0]))


def load(url: str, clients: int, seconds: float, path: str = "/embed", honour_retry_after: bool = False) -> dict:
    """`clients` concurrent clients, in up to 8 processes; latency of the 200s and every status counted. Clients
    send again at once after a 503 unless `honour_retry_after` (then they wait as its Retry-After says)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = min(8, clients)
    shares = [clients // processes + (p < clients % processes) for p in range(processes)]
    procs = [
        context.Process(target=_client_process, args=(url, path, share, seconds, 100 * p, queue, honour_retry_after))
        for p, share in enumerate(shares)
    ]
    began = time.perf_counter()
    for proc in procs:
        proc.start()
    parts = [queue.get(timeout=seconds + 120) for _ in procs]
    wall = time.perf_counter() - began
    for proc in procs:
        proc.join(30)
    statuses: dict[int | str, int] = {}
    for _, counted, _ in parts:
        for status, n in counted.items():
            statuses[status] = statuses.get(status, 0) + n
    refused = sum(n for status, n in statuses.items() if status != 200)
    out = summary([x for lat, _, _ in parts for x in lat], refused, wall, clients)
    return {**out, "statuses": statuses, "503_without_retry_after": sum(b for _, _, b in parts)}


def http_rates(model: str, device: str, work: Path, corpus: Path, clients: tuple[int, ...], seconds: float) -> dict:
    """A real `llmql serve` process over a small memory index (on disk, so the server opens it): /embed at the
    fewest and the most clients."""
    from bench.common import start_service
    from llmql.connectors.sync import SyncConfig, sync

    small = work / "serve-corpus.jsonl"
    small.write_text("".join(corpus.read_text().splitlines(keepends=True)[:300]))
    index_dir = work / "serve-index"
    cfg = SyncConfig(corpus=str(small), model=model, backend="memory", url=str(index_dir), index="docs", device=device)
    sync(cfg, progress=False)
    arguments = ["--backend", "memory", "--url", str(index_dir), "--index", "docs", "--model", model]
    server, url = start_service([*arguments, "--device", device, "--max-queue", "256"])
    try:
        load(url, 1, 1.0)  # warm-up
        return {f"embed_clients_{n}": load(url, n, seconds) for n in (clients[0], clients[-1])}
    finally:
        server.terminate()
        server.wait(30)
