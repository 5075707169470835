"""Does LLM-QL work at CPU scale? Trains and evaluates the paper's comparison on SciFact with SmolLM2-135M.

One command per table, each resumable (finished jobs are skipped, interrupted training resumes):

    .venv/bin/python -m bench.quality split        # validation split of the training claims
    .venv/bin/python -m bench.quality tune         # stage-1 and stage-2 learning rates, on validation only
    .venv/bin/python -m bench.quality main         # runs 1-8 on the 300 test claims, 3 seeds for runs 3-6
    .venv/bin/python -m bench.quality report       # tables + bench/results/quality.json

Work (models, indexes, run files) goes to $LLMQL_BENCH_DIR (default ~/.cache/llmql/bench/quality).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import SHARED_DATA

WORK = Path(os.environ.get("LLMQL_BENCH_DIR", Path.home() / ".cache" / "llmql" / "bench" / "quality"))
DATA = SHARED_DATA / "scifact"
MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Protocol:
    """The scaled-down settings, fixed before any test claim was looked at (see BENCHMARKS.md)."""

    validation_fraction: float = 0.15
    max_passage_tokens: int = 200  # paper: 200
    max_query_tokens: int = 64  # paper: 200; SciFact claims are at most ~45 tokens
    # stage 1 (paper: full fine-tune, lr 1e-5, 512 sequences/step, 2 epochs, p = 0.6)
    ql_steps: int = 150
    ql_batch: int = 16
    mask_prob: float = 0.6
    pseudo_queries: str = "titles"
    ql_lr_grid: tuple[float, ...] = (2e-5, 1e-4)
    # stage 2 (paper: LoRA r32/a64/dropout 0.1, lr 1e-4, 128 queries/update, group 16, temperature 0.01)
    cl_steps: int = 60
    cl_batch: int = 8
    group_size: int = 4
    lora_r: int = 32
    lora_dropout: float = 0.0  # paper 0.1; 0 is 1.4x faster on this CPU (bench/results/lora_speed.json)
    temperature: float = 0.01
    cl_lr_grid: tuple[float, ...] = (1e-4, 3e-4)
    seeds: tuple[int, ...] = (0, 1, 2)
    rerank_depth: int = 100
    extra: dict = field(default_factory=dict)


P = Protocol()


def validation_ids() -> Path:
    """A fixed 15% of the training claims (by hash of the id), never trained on; used for all tuning."""
    path = WORK / "validation_ids.txt"
    if path.is_file():
        return path
    from llmql.train.data import load_beir

    data = load_beir(DATA, "train")
    held = sorted(
        q for q in data.qrels if int(hashlib.sha256(q.encode()).hexdigest(), 16) % 1000 < P.validation_fraction * 1000
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# SciFact training claims held out for validation (bench/quality.py split)\n" + "\n".join(held) + "\n"
    )
    return path


def validation_beir() -> Path:
    """A BEIR view whose 'validation' qrels are the held-out training claims (corpus and queries linked)."""
    root = WORK / "scifact-validation"
    if (root / "qrels" / "validation.tsv").is_file():
        return root
    held = set(validation_ids().read_text().split())
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).exists():
            (root / name).symlink_to(DATA / name)
    lines = (DATA / "qrels" / "train.tsv").read_text().splitlines()
    rows = [lines[0]] + [ln for ln in lines[1:] if ln.split("\t")[0] in held]
    (root / "qrels" / "validation.tsv").write_text("\n".join(rows) + "\n")
    return root


def job(name: str):
    """Decorator: run once, store the returned dict as WORK/results/NAME.json, skip when it exists."""

    def wrap(fn):
        def run(*args, **kwargs):
            path = WORK / "results" / f"{name}.json"
            if path.is_file():
                return json.loads(path.read_text())
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            result["wall_seconds"] = round(time.perf_counter() - start, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"[{name}] {json.dumps(result)}", flush=True)
            return result

        return run

    return wrap


def train_stage1(
    name: str, lr: float, seed: int, steps: int, attention_stop: bool = True, mask_prob: float | None = None
) -> Path:
    from llmql.train.config import OptimConfig, QLTrainConfig
    from llmql.train.run import train_ql

    out = WORK / "models" / name
    if (out / "llmql.json").is_file():
        return out
    cfg = QLTrainConfig(
        model=MODEL,
        data=str(DATA),
        out=str(out),
        exclude_queries=str(validation_ids()),
        pseudo_queries=P.pseudo_queries,
        max_passage_tokens=P.max_passage_tokens,
        max_query_tokens=P.max_query_tokens,
        mask_prob=P.mask_prob if mask_prob is None else mask_prob,
        attention_stop=attention_stop,
        optim=OptimConfig(learning_rate=lr, max_steps=steps, batch_size=P.ql_batch, seed=seed, save_every=25),
    )
    return train_ql(cfg, resume=(out / "checkpoints").is_dir())


def validation_ql_nll(model: Path) -> dict:
    """Mean negative log-likelihood per query token of held-out (claim, cited abstract) pairs, AS layout."""
    import numpy as np

    from llmql.train.data import load_beir
    from llmql.train.ql_scorer import QLScorer

    data = load_beir(validation_beir(), "validation")
    scorer = QLScorer.from_pretrained(model)
    total, tokens = 0.0, 0
    for qid, docs in data.qrels.items():
        doc_list = [data.corpus[d] for d in docs]
        scores = scorer.score(data.queries[qid], [d.text for d in doc_list], [d.title for d in doc_list])
        total += float(np.sum(scores))
        tokens += len(scorer.tokenizer.ql_queries([data.queries[qid]])[0]) * len(doc_list)
    return {"val_nll_per_token": -total / tokens, "pairs": sum(len(v) for v in data.qrels.values())}


def cmd_split(_args) -> None:
    print(validation_ids(), validation_beir())


def cmd_tune_ql(_args) -> dict:
    """Stage-1 learning rate by held-out QL loss (100 steps each, AS + IC, seed 0)."""
    results = {}
    for lr in P.ql_lr_grid:
        name = f"tune-ql-lr{lr:g}"
        results[lr] = job(name)(
            lambda lr=lr, name=name: {"lr": lr, **validation_ql_nll(train_stage1(name, lr, seed=0, steps=100))}
        )()
    best = min(results.values(), key=lambda r: r["val_nll_per_token"])
    print(f"stage-1 learning rate chosen on validation: {best['lr']:g}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("split").set_defaults(fn=cmd_split)
    sub.add_parser("tune-ql").set_defaults(fn=cmd_tune_ql)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.fn(args)


if __name__ == "__main__":
    main()
