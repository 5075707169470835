"""`llmql quickstart`: the whole product on a real collection, in about a quarter of an hour on 2 CPU cores.

A short stage 1 (QL with Attention Stop and Input Corruption) and stage 2 (contrastive LoRA) on SciFact with
SmolLM2-135M, ONNX export with the QL scorer, sync into the embedded engine with cached [E] states, tuning of the
fusion and QL weights on training queries held out of both stages (never the test queries), and the evaluation
table on the test claims: BM25, dense, hybrid and hybrid+QL with the tuned settings, and `tuned` (what search
does by default), each beside its paired difference from BM25. Every step is skipped when its output already
exists, so a second run only re-evaluates. `budget` scales the training steps.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from llmql.connectors.sync import SyncConfig, sync
from llmql.plugin.evaluate import EvalConfig, evaluate, format_table
from llmql.plugin.search import SearchConfig
from llmql.plugin.search_settings import describe, read_search_settings, search_config
from llmql.plugin.tune import TuneConfig, tune
from llmql.train.core.config import ContrastiveTrainConfig, LoraSettings, OptimConfig, QLTrainConfig
from llmql.train.core.device import is_cuda, resolve_device
from llmql.train.core.errors import LLMQLError
from llmql.train.core.model_sources import cache_root
from llmql.train.data import hold_out_queries, read_id_file


def default_data() -> Path | None:
    """../shared/data/scifact relative to the repository or the working directory, or $LLMQL_DATA."""
    candidates = [
        os.environ.get("LLMQL_DATA", ""),
        Path.cwd().parent / "shared" / "data" / "scifact",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact",
    ]
    return next((Path(c) for c in candidates if c and (Path(c) / "corpus.jsonl").is_file()), None)


def default_workdir(model: str = "smollm2-135m", smoke: bool = False) -> Path:
    """$LLMQL_CACHE/quickstart/<version>-<key>: one folder per checkout (the code's own location), llmql version
    and model, so that another clone or version never reuses this one's models without saying so; the smoke
    preset's in a folder of its own (`-smoke`), never mistaken for the full run's."""
    import hashlib
    import importlib.metadata

    try:
        version = importlib.metadata.version("llmql")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    source = str(Path(__file__).resolve().parents[1])
    key = hashlib.sha256(f"{source}|{version}|{model}".encode()).hexdigest()[:10]
    return cache_root() / "quickstart" / f"{version}-{key}{'-smoke' if smoke else ''}"


def _qrels_rows(data: Path, split: str) -> list[str]:
    return [line for line in (data / "qrels" / f"{split}.tsv").read_text().splitlines()[1:] if line.strip()]


def corpus_slice(
    data: Path, out: Path, size: int, seed: int = 0, tuning: set[str] = frozenset(), test_queries: int | None = None
) -> Path:
    """A BEIR view with every document judged for its test queries (a random `test_queries` of them, or all)
    and for the `tuning` queries, plus random others up to `size` documents (queries linked; the corpus and
    qrels lines written). Quick, and clearly not the full-corpus figure."""
    import random

    recipe = json.dumps({"size": size, "seed": seed, "tuning": sorted(tuning), "test_queries": test_queries})
    if (
        (out / "corpus.jsonl").is_file()
        and (out / "slice.json").is_file()
        and (out / "slice.json").read_text() == recipe
    ):
        return out
    shutil.rmtree(out, ignore_errors=True)  # made for other tuning queries (or by an earlier version): rebuild
    test_rows = _qrels_rows(data, "test")
    if test_queries is not None:
        queries = sorted({r.split("\t")[0] for r in test_rows})
        chosen = set(random.Random(seed).sample(queries, min(test_queries, len(queries))))
        test_rows = [r for r in test_rows if r.split("\t")[0] in chosen]
    judged = {line.split("\t")[1] for line in test_rows}
    judged |= {row.split("\t")[1] for row in _qrels_rows(data, "train") if row.split("\t")[0] in tuning}
    rows = (data / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    ids = [json.loads(r)["_id"] for r in rows]
    others = [i for i in ids if i not in judged]
    keep = judged | set(random.Random(seed).sample(others, max(0, min(len(others), size - len(judged)))))
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    if (data / "queries.jsonl").exists():
        (out / "queries.jsonl").symlink_to((data / "queries.jsonl").resolve())
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{r}\n" for r in test_rows))
    # the training judgements the slice can answer: the tuning queries' (the rest judge documents left out)
    kept = [r for r in _qrels_rows(data, "train") if r.split("\t")[0] in tuning]
    (out / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{r}\n" for r in kept))
    tmp = out / "corpus.jsonl.tmp"
    tmp.write_text("\n".join(r for r, i in zip(rows, ids, strict=True) if i in keep) + "\n", encoding="utf-8")
    tmp.rename(out / "corpus.jsonl")
    (out / "slice.json").write_text(recipe)
    return out


GPU_BUDGET = 8.0  # training steps on a GPU, against the 2-core CPU's (a GPU step is many times faster; unmeasured)


@dataclass(frozen=True)
class QuickstartConfig:
    data: str
    model: str = "smollm2-135m"
    workdir: str | None = None  # default: $LLMQL_CACHE/quickstart (outside any repository)
    budget: float = 1.0
    corpus_docs: int | None = 300  # searched corpus: the test-judged documents + others; None = all
    test_queries: int | None = 100  # a random share of the test queries, for a slice (None: all)
    backend: str = "embedded"
    url: str | None = None  # default: WORKDIR/index for the embedded backend
    index: str = "llmql-quickstart"
    ql_steps: int = 15
    cl_steps: int = 10
    tune_share: float = 0.2  # of the training queries, held out of training to tune the search settings
    tune_queries: int = 50  # at most
    max_passage_tokens: int = 96
    seed: int = 0
    runtime: str = "auto"
    device: str = "auto"  # auto, cpu, cuda, cuda:N (llmql.train.core.device.resolve_device)
    smoke: bool = False  # the SMOKE preset: a check that the whole pipeline runs, its figures meaningless


# `llmql quickstart --smoke` (CI's main job): the same six steps on the real model, as small as still exercises
# each one (3 + 2 training steps, 100 documents, 20 test and 20 tuning queries), in about 10 minutes on 2 cores
SMOKE = {"budget": 0.2, "corpus_docs": 100, "test_queries": 20, "tune_queries": 20}


def quickstart(cfg: QuickstartConfig, echo=print) -> dict:
    """The six steps in order; each is skipped when its output already exists."""
    from llmql.export.convert import ExportConfig, export_model  # torch and the trainers, only when this step runs

    if is_cuda(resolve_device(cfg.device)):  # a GPU that is not here is refused before any work
        cfg = replace(cfg, budget=cfg.budget * GPU_BUDGET)
    _check_collection(Path(cfg.data))  # before the work folder exists: a refusal leaves nothing behind
    work = Path(cfg.workdir) if cfg.workdir else default_workdir(cfg.model, cfg.smoke)
    reused = (work / "stage1" / "llmql.json").is_file()
    echo(
        f"work folder: {work}"
        + (" (reusing what an earlier run built there; delete it, or pass --workdir, to start fresh)" if reused else "")
    )
    work.mkdir(parents=True, exist_ok=True)
    held_out = hold_out_queries(cfg.data, work / "tuning-queries.txt", cfg.tune_share, cfg.tune_queries, cfg.seed)
    tuning = read_id_file(held_out)
    searched = (
        Path(cfg.data)
        if cfg.corpus_docs is None
        else corpus_slice(Path(cfg.data), work / "corpus-slice", cfg.corpus_docs, cfg.seed, tuning, cfg.test_queries)
    )
    ql_steps, cl_steps = max(1, round(cfg.ql_steps * cfg.budget)), max(1, round(cfg.cl_steps * cfg.budget))
    stage1, stage2, export = work / "stage1", work / "stage2", work / "export"

    echo(f"[1/6] stage 1: query likelihood, {ql_steps} steps -> {stage1} ({len(tuning)} training queries held out)")
    if not (stage1 / "llmql.json").is_file():
        _train_stage1(cfg, stage1, ql_steps, held_out)
    echo(f"[2/6] stage 2: contrastive LoRA, {cl_steps} steps -> {stage2}")
    if not (stage2 / "llmql.json").is_file():
        _train_stage2(cfg, stage1, stage2, cl_steps, held_out)
    echo(f"[3/6] ONNX export with the QL scorer -> {export}")
    if not (export / "manifest.json").is_file():
        export_model(ExportConfig(model=str(stage2), out=str(export), ql_scorer=True, validation_data=cfg.data))
    url = cfg.url or str(work / "index")
    echo(f"[4/6] sync into {cfg.backend} ({url}, index {cfg.index}) with cached [E] states")
    report = _sync(cfg, searched, export, url, work)
    echo(f"      indexed {report.indexed}, unchanged {report.unchanged} in {report.seconds:.0f} s")
    echo(f"[5/6] tune fusion and QL weights on the {len(tuning)} held-out training queries -> {export}/search.json")
    for line in _tune(cfg, searched, export, url, held_out):
        echo(f"      {line}")
    echo("[6/6] evaluation on the test queries (tuned settings; beside each row its paired difference from BM25)")
    summary = _evaluate(cfg, searched, export, url, work)
    echo(format_table(summary))
    for line in _row_settings(export):
        echo(line)
    if cfg.corpus_docs is not None:
        echo(
            f"(searched corpus: {report.indexed + report.unchanged} documents = every test-judged document, those "
            "judged for the tuning queries, and random others; a quick check, not comparable to full-corpus "
            "figures: see BENCHMARKS.md)"
        )
    for line in _next_commands(cfg, searched, export, url):
        echo(line)
    return summary


def _check_collection(data: Path) -> None:
    """What the six steps read: the corpus, the queries, training and test judgements."""
    wanted = ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv")
    missing = [name for name in wanted if not (data / name).is_file()]
    if missing:
        raise LLMQLError(
            f"{data}: not a BEIR collection the quickstart can use (missing {', '.join(missing)}); nothing was done"
        )


def _row_settings(export: Path) -> list[str]:
    """What each row of the table ran, in words."""

    tuned = search_config(export)
    hybrid = SearchConfig(mode="hybrid", fusion=tuned.fusion, weights=tuned.weights)
    off = "" if tuned.rerank_depth else " (tuning left QL re-ranking off: it did not beat the fused list)"
    return [
        "each row's settings:",
        "  bm25: BM25, top 100",
        "  dense: the retriever's kNN, top 100",
        f"  hybrid: {describe(hybrid)}",
        f"  tuned: what llmql-search does by default (search.json): {describe(tuned)}{off}",
    ]


def _next_commands(cfg: QuickstartConfig, data: Path, export: Path, url: str) -> list[str]:
    """The exact commands that search, evaluate and serve what was built."""
    where = f"--backend {cfg.backend} --url {url} --index {cfg.index}"
    models = f"--model {export} --ql-model {export}"
    models += "".join(f" --{k} {v}" for k, v in (("runtime", cfg.runtime), ("device", cfg.device)) if v != "auto")
    return [
        "next (what was built, as the README's step 5 uses it):",
        f'  llmql-search "aspirin lowers the risk of stroke" {where} {models} --rerank-depth 100 --explain',
        f"  llmql-eval --data {data} {where} {models} --runs bm25,dense,hybrid,hybrid+ql,tuned",
        f"  llmql serve {where} {models} --port 8080",
    ]


def _tune(cfg: QuickstartConfig, data: Path, export: Path, url: str, held_out: Path) -> list[str]:
    """Tune once (search.json beside the export); a rerun reads the earlier choice."""

    settings = read_search_settings(export)
    if settings is None:
        settings = tune(
            TuneConfig(
                data=str(data),
                model=str(export),
                split="train",
                queries_file=str(held_out),
                ql_model=str(export),
                backend=cfg.backend,
                url=url,
                index=cfg.index,
                rerank_depths=(10, 20, 50),
                runtime=cfg.runtime,
                device=cfg.device,
            )
        )
    figures = settings["figures"]
    lines = [
        f"chosen {json.dumps(settings['search'])}",
        f"nDCG@10 on the tuning queries: BM25 {figures['bm25']:.4f}, chosen {figures['chosen']:.4f}",
    ]
    return lines + [f"note: {note}" for note in settings["notes"]]


def _train_stage1(cfg: QuickstartConfig, out: Path, steps: int, held_out: Path) -> None:
    from llmql.train.run import train_ql  # torch and the trainers, only when this step runs

    train_ql(
        QLTrainConfig(
            model=cfg.model,
            data=cfg.data,
            out=str(out),
            pseudo_queries="titles",
            exclude_queries=str(held_out),
            max_passage_tokens=cfg.max_passage_tokens,
            max_query_tokens=64,
            optim=OptimConfig(learning_rate=5e-5, max_steps=steps, batch_size=8, seed=cfg.seed, save_every=10),
        ),
        resume=(out / "checkpoints").is_dir(),
    )


def _train_stage2(cfg: QuickstartConfig, stage1: Path, out: Path, steps: int, held_out: Path) -> None:
    from llmql.train.run import train_contrastive  # torch and the trainers, only when this step runs

    train_contrastive(
        ContrastiveTrainConfig(
            model=str(stage1),
            data=cfg.data,
            out=str(out),
            group_size=4,
            exclude_queries=str(held_out),
            temperature=0.01,
            max_passage_tokens=cfg.max_passage_tokens,
            max_query_tokens=64,
            lora=LoraSettings(r=32, alpha=64, dropout=0.0),
            optim=OptimConfig(
                learning_rate=1e-4,
                warmup_steps=max(1, steps // 10),
                max_steps=steps,
                batch_size=4,
                seed=cfg.seed,
                save_every=10,
            ),
        ),
        resume=(out / "checkpoints").is_dir(),
    )


def _sync(cfg: QuickstartConfig, corpus: Path, export: Path, url: str, work: Path):

    report = sync(
        SyncConfig(
            corpus=str(corpus),
            model=str(export),
            backend=cfg.backend,
            url=url,
            index=cfg.index,
            incremental=True,
            delete_missing=True,
            end_states="fp16",
            runtime=cfg.runtime,
            device=cfg.device,
            failures_file=str(work / "sync-failures.jsonl"),
        )
    )
    if report.failed:
        raise LLMQLError(f"{report.failed} documents failed to sync; see {report.failures_file}")
    if not report.ok:
        raise LLMQLError(f"after the sync the index does not hold the corpus: {report.verified.summary()}")
    return report


def _evaluate(cfg: QuickstartConfig, data: Path, export: Path, url: str, work: Path) -> dict:

    tuned_depth = read_search_settings(export)["search"]["rerank_depth"]

    return evaluate(
        EvalConfig(
            data=str(data),
            runtime=cfg.runtime,
            device=cfg.device,
            split="test",
            backend=cfg.backend,
            url=url,
            index=cfg.index,
            model=str(export),
            ql_model=str(export),
            # QL kept by tuning: the tuned row is hybrid + QL; QL left off by tuning: no untuned row stands in for
            # it (the rows' settings are printed under the table)
            runs=("bm25", "dense", "hybrid", "tuned"),
            rerank_depth=tuned_depth or None,
            out_dir=str(work / "eval"),
        )
    )
