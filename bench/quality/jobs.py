"""Finished jobs as JSON files, keyed by their whole configuration: a changed setting never reuses a result.

A job's key hashes its name, its own arguments, the whole protocol, the backbone and the collection. A stored
result with another key (or none) is stale: it is run again and replaced, and the run says so.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from bench.quality.presets import Context


def job_key(ctx: Context, name: str, args: dict | None = None) -> str:
    payload = {
        "job": name,
        "args": args or {},
        "protocol": ctx.protocol.key_fields(),
        "model": ctx.model,
        "data": ctx.data.name,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(ctx: Context, name: str) -> dict | None:
    """A finished job's result whatever its key (for reports), or None."""
    path = ctx.jobs / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_job(ctx: Context, name: str, work: Callable[[], dict], args: dict | None = None) -> dict:
    """`work()` once per configuration: its dict is stored as JOBS/NAME.json with the key and wall time."""
    key = job_key(ctx, name, args)
    path = ctx.jobs / f"{name}.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored
        print(f"[{name}] stored result was made with other settings ({stored.get('key')} != {key}); running again")
    start = time.perf_counter()
    result = {**work(), "key": key, "args": args or {}}
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print(f"[{name}] {json.dumps({k: v for k, v in result.items() if not k.startswith('per_query')})[:400]}")
    return result


def trained(ctx: Context, name: str, train, cfg) -> Path:
    """The model `cfg.out`, trained now if it is not there yet (resuming a checkpoint); the training's wall time
    goes to JOBS/train-NAME.json. A model directory trained with another configuration is trained again."""
    from llmql.train.core.config import to_dict

    out = Path(cfg.out)
    stamp = out / "bench-config.json"
    wanted = json.dumps(to_dict(cfg), sort_keys=True, default=str)
    same = stamp.is_file() and stamp.read_text() == wanted
    if same and (out / "llmql.json").is_file():
        return out
    if out.exists() and not same:  # trained (or half-trained) under other settings: start over
        import shutil

        shutil.rmtree(out)
    resumed = (out / "checkpoints").is_dir()
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted)
    start = time.perf_counter()
    train(cfg, resume=resumed)
    record = {"model": name, "wall_seconds": round(time.perf_counter() - start, 1), "resumed": resumed}
    ctx.jobs.mkdir(parents=True, exist_ok=True)
    (ctx.jobs / f"train-{name}.json").write_text(json.dumps(record) + "\n")
    return out
