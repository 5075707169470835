"""`llmql quickstart`: the whole product on a real collection, in about a quarter of an hour on 2 CPU cores.

A short stage 1 (QL with Attention Stop and Input Corruption) and stage 2 (contrastive LoRA) on SciFact with
SmolLM2-135M, ONNX export with the QL scorer, sync into the embedded engine with cached [E] states, and the
evaluation table for BM25, dense, hybrid and hybrid+QL on the test claims. Every step is skipped when its
output already exists, so a second run only re-evaluates. `budget` scales the training steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llmql.train.errors import LLMQLError


def default_data() -> Path | None:
    """../shared/data/scifact relative to the repository or the working directory, or $LLMQL_DATA."""
    candidates = [
        os.environ.get("LLMQL_DATA", ""),
        Path.cwd().parent / "shared" / "data" / "scifact",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact",
    ]
    return next((Path(c) for c in candidates if c and (Path(c) / "corpus.jsonl").is_file()), None)


@dataclass(frozen=True)
class QuickstartConfig:
    data: str
    model: str = "smollm2-135m"
    workdir: str = "llmql-quickstart"
    budget: float = 1.0
    backend: str = "embedded"
    url: str | None = None  # default: WORKDIR/index for the embedded backend
    index: str = "llmql-quickstart"
    ql_steps: int = 40
    cl_steps: int = 40
    max_passage_tokens: int = 128
    seed: int = 0


def quickstart(cfg: QuickstartConfig, echo=print) -> dict:
    from llmql.connectors.sync import SyncConfig, sync
    from llmql.export.convert import ExportConfig, export_model
    from llmql.plugin.evaluate import EvalConfig, evaluate, format_table
    from llmql.train.config import ContrastiveTrainConfig, LoraSettings, OptimConfig, QLTrainConfig
    from llmql.train.run import train_contrastive, train_ql

    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)
    steps = {"ql": max(1, round(cfg.ql_steps * cfg.budget)), "cl": max(1, round(cfg.cl_steps * cfg.budget))}
    stage1, stage2, export = work / "stage1", work / "stage2", work / "export"

    echo(f"[1/5] stage 1: query likelihood, {steps['ql']} steps -> {stage1}")
    if not (stage1 / "llmql.json").is_file():
        train_ql(
            QLTrainConfig(
                model=cfg.model,
                data=cfg.data,
                out=str(stage1),
                pseudo_queries="titles",
                max_passage_tokens=cfg.max_passage_tokens,
                max_query_tokens=64,
                optim=OptimConfig(
                    learning_rate=5e-5, max_steps=steps["ql"], batch_size=8, seed=cfg.seed, save_every=10
                ),
            ),
            resume=(stage1 / "checkpoints").is_dir(),
        )
    echo(f"[2/5] stage 2: contrastive LoRA, {steps['cl']} steps -> {stage2}")
    if not (stage2 / "llmql.json").is_file():
        train_contrastive(
            ContrastiveTrainConfig(
                model=str(stage1),
                data=cfg.data,
                out=str(stage2),
                group_size=4,
                temperature=0.01,
                max_passage_tokens=cfg.max_passage_tokens,
                max_query_tokens=64,
                lora=LoraSettings(r=32, alpha=64, dropout=0.0),
                optim=OptimConfig(
                    learning_rate=1e-4,
                    warmup_steps=max(1, steps["cl"] // 10),
                    max_steps=steps["cl"],
                    batch_size=4,
                    seed=cfg.seed,
                    save_every=10,
                ),
            ),
            resume=(stage2 / "checkpoints").is_dir(),
        )
    echo(f"[3/5] ONNX export with the QL scorer -> {export}")
    if not (export / "manifest.json").is_file():
        export_model(ExportConfig(model=str(stage2), out=str(export), ql_scorer=True, validation_data=cfg.data))
    url = cfg.url or str(work / "index")
    echo(f"[4/5] sync into {cfg.backend} ({url}, index {cfg.index}) with cached [E] states")
    report = sync(
        SyncConfig(
            corpus=cfg.data,
            model=str(export),
            backend=cfg.backend,
            url=url,
            index=cfg.index,
            incremental=True,
            delete_missing=True,
            ql_cache="fp16",
            failures_file=str(work / "sync-failures.jsonl"),
        )
    )
    if not report.ok:
        raise LLMQLError(f"{report.failed} documents failed to sync; see {report.failures_file}")
    echo(f"      indexed {report.indexed}, unchanged {report.unchanged} in {report.seconds:.0f} s")
    echo("[5/5] evaluation on the test queries")
    summary = evaluate(
        EvalConfig(
            data=cfg.data,
            split="test",
            backend=cfg.backend,
            url=url,
            index=cfg.index,
            model=str(export),
            ql_model=str(export),
            runs=("bm25", "dense", "hybrid", "hybrid+ql"),
            rerank_depth=20,
            out_dir=str(work / "eval"),
        )
    )
    echo(format_table(summary))
    return summary
