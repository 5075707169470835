"""Shared bits of the benchmark scripts: machine description, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

SHARED_DATA = Path(os.environ.get("LLMQL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the figures were measured on."""
    cpu = "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import torch

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16_native": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    if os.environ.get("LLMQL_COMMIT"):  # a copy of the tree without .git (a lent GPU machine)
        return os.environ["LLMQL_COMMIT"]
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], text=True, cwd=Path(__file__).parent
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def memory_mib(field: str = "VmRSS", pid: int | str = "self") -> float:
    """A process's resident memory from /proc/PID/status (this process by default), MiB: VmRSS now, VmHWM its
    peak since it started (or since `reset_peak_memory`). Not getrusage's ru_maxrss: Linux keeps the parent's
    peak in it across fork and exec, so a child started by a large process reads the parent's size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status (Linux only)")


def reset_peak_memory() -> None:
    """Set VmHWM to the current resident size (Linux 4.0+), so that the next peak is what follows."""
    Path("/proc/self/clear_refs").write_text("5")


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def matmul_peak_gflops(dtype_name: str = "float32", size: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Dense matmul throughput of `device` in this process (the ceiling every model path is compared with); on
    a GPU 8192-square products, each timed to completion."""
    import torch

    dtype = getattr(torch, dtype_name)
    size = 8192 if device.startswith("cuda") else size
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)

    def product() -> None:
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    product()  # warm-up (kernel selection)
    seconds = median(timed(product, repeats))
    return 2 * size**3 / seconds / 1e9


def engine_targets(embedded_dir: Path) -> list[tuple[str, str]]:
    """The engines a speed benchmark measures: the embedded one always, each server whose URL is set
    (`eval "$(scripts/search-server env)"`); a missing server is said, not silently dropped."""
    targets = [("embedded", str(embedded_dir))]
    for engine in ("opensearch", "elasticsearch"):
        url = os.environ.get(f"LLMQL_{engine.upper()}_URL")
        if url:
            targets.append((engine, url))
        else:
            print(f"{engine}: LLMQL_{engine.upper()}_URL not set, skipped", flush=True)
    return targets


def link_model_files(source: Path, out: Path) -> None:
    """`out` gets every file of `source` but llmql.json as a symlink: a second view of the same weights."""
    out.mkdir(parents=True, exist_ok=True)
    for item in Path(source).iterdir():
        if item.name != "llmql.json" and not (out / item.name).exists():
            (out / item.name).symlink_to(item.resolve())


def model_view(source: Path, out: Path, **changes) -> Path:
    """The model or export `source` seen with its ModelConfig changed (e.g. max_passage_tokens=200): its files
    linked into `out`, its llmql.json rewritten there with the same training history."""
    from dataclasses import replace

    from llmql.train.core.config import load_llmql_config, save_llmql_config

    if not (out / "llmql.json").is_file():
        link_model_files(source, out)
        config, history = load_llmql_config(source)
        save_llmql_config(out, replace(config, **changes), history=history)
    return out


def start_service(
    arguments: list[str], seconds: float = 300, cpus: set[int] | None = None
) -> tuple[subprocess.Popen, str]:
    """`llmql serve ARGUMENTS` (through this Python, so it works where the console scripts are not installed) on a
    free port, once its /health answers; (process, URL). `cpus` confines the server, every thread of it, to those
    cores. The caller terminates it."""
    import socket
    import sys

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llmql.plugin.cli", "serve", *arguments, "--port", str(port)]
    confine = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))  # before any thread starts
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=confine
    )
    url, deadline = f"http://127.0.0.1:{port}", time.time() + seconds
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError(f"llmql serve did not come up: {process.stderr.read()[-2000:]}")
        time.sleep(0.5)
