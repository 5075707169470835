"""The paper's comparison at GPU scale in one timed run: one table of every retriever and re-ranker on the SciFact
test claims, and the same models on the DL19 subset as an out-of-domain check.

Rows: LLM-QL dense (stage 1, then stage 2), contrastive-only dense (stage 2 from the backbone), BM25, hybrid
with the fusion tuned on validation (`llmql tune`), hybrid + QL at the tuned QL weight, cached-[E] QL re-ranking
of BM25's top 100 (the stage-1 model), zero-shot QL (the untrained backbone reading each document with ordinary
attention) and Dirichlet word QL; each with its paired 95% interval against BM25 and against contrastive-only.

What is trained is planned against `minutes` (`TimePlan`): the required models first (stage 1 at the preset's
first rate, each arm's stage 2 at its first setting), then the stage-2 grid (more epochs, the other rates) and
the other seeds while the time measured so far says they fit, keeping what the test evaluation will take. Every
choice is made on validation (held-out training claims); the test claims are read once, at the end.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import SHARED_DATA
from bench.quality.jobs import run_job
from bench.quality.presets import Context
from bench.quality.runs import _tag, cl_settings
from bench.quality.statistics import paired
from bench.quality.steps import (
    build_index,
    metrics,
    run_eval,
    train_stage1,
    train_stage2,
    validation_score,
    zeroshot_model,
)

DL19 = "msmarco-trec-dl19-subset"
ROWS = (  # (label, index arm, run): the table's order
    ("LLM-QL dense", "llmql", "dense"),
    ("contrastive-only dense", "baseline", "dense"),
    ("BM25", "llmql", "bm25"),
    ("hybrid (tuned on validation)", "llmql", "hybrid"),
    ("hybrid + QL (tuned weight)", "llmql", "hybrid+ql"),
    ("QL re-rank, cached [E] (stage 1)", "llmql", "ql"),
    ("QL re-rank, zero-shot, ordinary attention", "zeroshot", "ql-zeroshot"),
    ("Dirichlet word QL", "llmql", "ql-dirichlet"),
)


@dataclass
class TimePlan:
    """The budget, what each kind of work has cost so far, and what is left."""

    seconds: float
    started: float = field(default_factory=time.perf_counter)
    costs: dict[str, list[float]] = field(default_factory=dict)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def timed(self, kind: str, fn):
        start = time.perf_counter()
        out = fn()
        self.costs.setdefault(kind, []).append(time.perf_counter() - start)
        return out

    def estimate(self, kind: str, scale: float = 1.0) -> float:
        """What one more piece of work of this kind takes (scaled, e.g. by epochs), from the ones done so far."""
        done = self.costs.get(kind)
        return scale * max(done) if done else float("inf")

    def fits(self, kind: str, scale: float = 1.0, keep: float = 0.0) -> bool:
        """Whether it fits in what is left after `keep` seconds set aside (the test evaluation)."""
        return self.estimate(kind, scale) <= self.left() - keep


def plan_extras(settings: list[dict], seeds: list[int], plan: TimePlan, keep: float) -> list[tuple[str, dict, int]]:
    """The optional stage-2 runs that fit, in order of worth: the grid's other settings (both arms, so that each
    arm is tuned alike), then the other seeds at the first setting. A pure function of the plan's figures."""
    first = settings[0]
    wanted = [(arm, s, seeds[0]) for s in settings[1:] for arm in ("asic", "baseline")]
    wanted += [(arm, first, seed) for seed in seeds[1:] for arm in ("asic", "baseline")]
    out, budget = [], plan.left() - keep
    for arm, setting, seed in wanted:
        cost = plan.estimate("stage2", (setting["epochs"] or 1) / (first["epochs"] or 1))
        cost += plan.estimate("validation") if seed == seeds[0] else 0.0
        if cost <= budget:
            out.append((arm, setting, seed))
            budget -= cost
    return out


def comparison(ctx: Context) -> dict:
    """Train within the budget, choose on validation, evaluate once on the test claims and on DL19."""
    P = ctx.protocol
    plan = TimePlan(60 * (ctx.minutes or 8.0))
    seeds = list(ctx.seeds or P.seeds[:1])
    zeroshot = plan.timed("setup", lambda: zeroshot_model(ctx))
    lr = P.ql_lr_grid[-1]  # the rate the CPU protocol chose on validation; no stage-1 grid in the timed run
    stage1 = plan.timed("stage1", lambda: train_stage1(ctx, f"stage1-lr{lr:g}", lr, seed=0))
    settings = cl_settings(ctx)
    scored: dict[tuple[str, int], list[tuple[float, dict, Path]]] = {}

    def train_and_score(arm: str, setting: dict, seed: int) -> None:
        base = ctx.model if arm == "baseline" else str(stage1)
        name = f"cl-{arm}-{_tag(setting)}-seed{seed}"
        model = plan.timed("stage2", lambda: train_stage2(ctx, name, base, setting["lr"], seed, setting["epochs"]))
        if seed == seeds[0]:
            score = plan.timed("validation", lambda: validation_score(ctx, model, model.name)["nDCG@10"])
        else:
            score = float("nan")
        scored.setdefault((arm, seed), []).append((score, setting, model))

    for arm in ("asic", "baseline"):
        train_and_score(arm, settings[0], seeds[0])
    keep = 3 * plan.estimate("validation") + 60  # the test evaluation: about three validation passes, and a margin
    extras = plan_extras(settings, seeds, plan, keep)
    for arm, setting, seed in extras:
        if seed == seeds[0]:
            train_and_score(arm, setting, seed)
    chosen = {arm: max(scored[(arm, seeds[0])], key=lambda x: x[0]) for arm in ("asic", "baseline")}
    for arm, _, seed in [e for e in extras if e[2] != seeds[0]]:
        train_and_score(arm, chosen[arm][1], seed)
    tables = {
        name: evaluate_rows(ctx, data, stage1, chosen, zeroshot, tune_on_validation=name == "scifact")
        for name, data in (("scifact", ctx.data), ("dl19", out_of_domain()))
    }
    return {
        "minutes": plan.seconds / 60,
        "seconds_used": round(plan.seconds - plan.left(), 1),
        "seeds_trained": sorted({seed for _, seed in scored}),
        "grid": settings,
        "chosen": {arm: {"setting": s, "validation_ndcg10": v, "model": m.name} for arm, (v, s, m) in chosen.items()},
        "tried": {f"{a}-seed{s}": [(v, x) for v, x, _ in r] for (a, s), r in scored.items()},
        "costs_seconds": {k: [round(x, 1) for x in v] for k, v in plan.costs.items()},
        "tables": tables,
    }


def out_of_domain() -> Path:
    """The out-of-domain collection: the DL19 subset (LLMQL_BENCH_OOD overrides, e.g. for the dry run)."""
    return Path(os.environ.get("LLMQL_BENCH_OOD", SHARED_DATA / DL19))


def evaluate_rows(ctx: Context, data: Path, stage1: Path, chosen: dict, zeroshot: Path, tune_on_validation: bool):
    """Every row of the table on one collection's test queries, with the paired comparisons."""
    llmql, baseline = chosen["asic"][2], chosen["baseline"][2]
    tag = data.name
    if tune_on_validation:
        tune_search_settings(ctx, llmql)
    weight = json.loads((llmql / "search.json").read_text())["search"]
    index = build_index(ctx, str(llmql), f"test-{tag}-llmql", data, end_states=True)
    runs = ("bm25", "dense", "hybrid", "hybrid+ql", "ql", "ql-dirichlet")
    ql_weight = weight["ql_weight"] if weight.get("rerank_depth") else 0.0
    summary = run_eval(ctx, f"test-{tag}-llmql", index, data, "test", runs, str(llmql), str(llmql), (ql_weight,))
    found = {run: metrics(summary, run) for run in runs}
    base_index = build_index(ctx, str(baseline), f"test-{tag}-baseline", data)
    found["baseline-dense"] = metrics(
        run_eval(ctx, f"test-{tag}-baseline", base_index, data, "test", ("dense",), str(baseline)), "dense"
    )
    found["ql-zeroshot"] = zeroshot_ql(ctx, zeroshot, index, data)
    rows = []
    for label, arm, run in ROWS:
        row = found["baseline-dense" if arm == "baseline" else run]
        entry = {"label": label, "run": run, **row["metrics"]}
        for against, name in (("bm25", "vs_bm25"), ("baseline-dense", "vs_contrastive_only")):
            if row is not found[against]:
                entry[name] = paired(row["per_query_ndcg10"], found[against]["per_query_ndcg10"])
        rows.append(entry)
    return {"queries": len(found["bm25"]["per_query_ndcg10"]), "ql_weight": ql_weight, "rows": rows}


def tune_search_settings(ctx: Context, model: Path) -> None:
    """search.json beside the LLM-QL model: fusion, QL weight and depth chosen on the validation claims."""
    from bench.quality.data import validation_corpus
    from llmql.plugin.tune import TuneConfig, tune

    corpus = validation_corpus(ctx)
    index = build_index(ctx, str(model), f"val-tune-{model.name}", corpus, end_states=True)
    tune(
        TuneConfig(
            data=str(corpus),
            model=str(model),
            split="validation",
            ql_model=str(model),
            backend=ctx.backend,
            url=str(ctx.indexes),
            index=index,
            depth=ctx.protocol.rerank_depth,
            runtime=ctx.runtime,
            device=ctx.device,
        ),
        progress=False,
    )


def zeroshot_ql(ctx: Context, zeroshot: Path, index: str, data: Path) -> dict:
    """The untrained backbone's log P(q | d), each document read with ordinary attention (no [E] bottleneck),
    re-ranking BM25's top documents: what QL gives before any LLM-QL training."""

    def work() -> dict:
        from llmql.connectors.registry import open_backend
        from llmql.plugin.evaluate import score_run
        from llmql.train.core.device import resolve_device
        from llmql.train.data import load_beir
        from llmql.train.ql_scorer import QLScorer

        depth = ctx.protocol.rerank_depth
        beir = load_beir(data, "test")
        backend = open_backend(ctx.backend, str(ctx.indexes))
        scorer = QLScorer.from_pretrained(zeroshot, device=resolve_device(ctx.device), attention_stop=False)
        run = {}
        for qid in sorted(beir.qrels):
            hits = backend.bm25(index, beir.queries[qid], depth)
            scores = scorer.score(beir.queries[qid], [h.text for h in hits], [h.title for h in hits], batch_size=128)
            run[qid] = {h.id: float(s) for h, s in zip(hits, scores, strict=True)}
        scored = score_run(beir.qrels, run, depth)
        per_query = {q: v["nDCG@10"] for q, v in scored["per_query"].items()}
        return {"metrics": scored["metrics"], "per_query_ndcg10": per_query}

    return run_job(ctx, f"ql-zeroshot-{data.name}", work, {"index": index})


def table(result: dict) -> str:
    """The tables as text, one per collection."""
    out = []
    for name, block in result["tables"].items():
        out.append(f"{name} ({block['queries']} test queries), QL weight chosen on validation: {block['ql_weight']:g}")
        out.append(f"{'run':<44}{'nDCG@10':>9}{'R@100':>8}   vs BM25 [95% CI]         vs contrastive-only")
        for row in block["rows"]:
            cells = "".join(_ci(row.get(k)) for k in ("vs_bm25", "vs_contrastive_only"))
            out.append(f"{row['label']:<44}{row['nDCG@10']:>9.4f}{row['R@100']:>8.4f}{cells}")
    return "\n".join(out)


def _ci(comparison: dict | None) -> str:
    if comparison is None:
        return f"{'':<25}"
    low, high = comparison["ci95"]
    return f"   {comparison['mean_difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def compare(ctx: Context) -> dict:
    """`comparison`, its tables printed and written to bench/results/quality-<preset>-comparison.json."""
    from bench.common import write_results

    result = comparison(ctx)
    print(table(result), flush=True)
    write_results(f"quality-{ctx.protocol.name}-comparison", {"device": ctx.device, **result})
    return result
