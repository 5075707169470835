"""The comparison itself: tuning on validation, runs 1-8 on the test claims, in the order that answers the central
question first (baselines, tuning, runs 3-4 and 7-8 at seed 0, the other seeds, then the ablations 5-6)."""

from __future__ import annotations

import itertools
from pathlib import Path

from bench.common import model_view
from bench.quality.data import validation_corpus
from bench.quality.jobs import run_job
from bench.quality.presets import Context
from bench.quality.steps import (
    build_index,
    metrics,
    minilm_reference,
    run_eval,
    train_stage1,
    train_stage2,
    validation_ql_nll,
    validation_score,
    zeroshot_model,
)

ARMS = {  # run number in the issue -> (label, stage-1 variant or "baseline" for contrastive only)
    3: ("contrastive only", "baseline"),
    4: ("LLM-QL (AS + IC)", "asic"),
    5: ("LLM-QL without Attention Stop", "no-as"),
    6: ("LLM-QL without Input Corruption", "no-ic"),
}


def tune_ql(ctx: Context) -> dict:
    """Stage-1 learning rate by held-out QL loss (AS + IC, seed 0); the run at the chosen rate is run 4's stage 1."""
    results = {}
    for lr in ctx.protocol.ql_lr_grid:
        name = f"tune-ql-lr{lr:g}"

        def work(lr=lr, name=name) -> dict:
            return {"lr": lr, **validation_ql_nll(ctx, train_stage1(ctx, name, lr, seed=0))}

        results[lr] = run_job(ctx, name, work, {"lr": lr, "seed": 0})
    # the untrained backbone's held-out QL loss, for scale (the prompt layout and mask are the same)
    run_job(ctx, "ql-nll-untrained", lambda: {"lr": None, **validation_ql_nll(ctx, zeroshot_model(ctx))})
    best = min(results.values(), key=lambda r: r["val_nll_per_token"])
    print(f"stage-1 learning rate chosen on validation: {best['lr']:g}")
    return best


def stage1_main(ctx: Context, variant: str, ql_seed: int = 0) -> Path:
    """Stage 1 for the test runs: AS+IC (the method), or one component ablated; lr from validation."""
    lr = tune_ql(ctx)["lr"]
    if variant == "asic" and ql_seed == 0:  # the tuning run at the chosen rate has exactly these settings
        return train_stage1(ctx, f"tune-ql-lr{lr:g}", lr, seed=0)
    options = {"asic": {}, "no-as": {"attention_stop": False}, "no-ic": {"mask_prob": 0.0}}[variant]
    suffix = f"-seed{ql_seed}" if ql_seed else ""
    return train_stage1(ctx, f"stage1-{variant}{suffix}", lr, seed=ql_seed, **options)


def cl_settings(ctx: Context) -> list[dict]:
    """The stage-2 settings tried on validation: each rate, with each epoch count where the protocol has them."""
    epochs = ctx.protocol.cl_epochs_grid or (None,)
    return [{"lr": lr, "epochs": e} for lr, e in itertools.product(ctx.protocol.cl_lr_grid, epochs)]


def _tag(setting: dict) -> str:
    return f"lr{setting['lr']:g}" + (f"-ep{setting['epochs']:g}" if setting["epochs"] else "")


def stage2_model(ctx: Context, arm: str, setting: dict, seed: int, ql_seed: int = 0) -> Path:
    """Stage 2 of one arm (`baseline`, or a stage-1 variant); tuning and test runs share these models."""
    base = ctx.model if arm == "baseline" else str(stage1_main(ctx, arm, ql_seed))
    name = f"cl-{arm}-{_tag(setting)}-seed{seed}" + (f"-ql{ql_seed}" if ql_seed else "")
    return train_stage2(ctx, name, base, setting["lr"], seed, setting["epochs"])


def tune_cl(ctx: Context) -> dict[str, dict]:
    """Stage-2 setting, separately for the contrastive-only baseline and for LLM-QL (validation nDCG@10)."""
    settings = cl_settings(ctx)
    if len(settings) == 1:
        return {"baseline": settings[0], "asic": settings[0]}
    chosen = {}
    for arm in ("baseline", "asic"):
        scores = []
        for setting in settings:
            name = f"tune-cl-{arm}-{_tag(setting)}"

            def work(setting=setting, name=name, arm=arm):
                model = stage2_model(ctx, arm, setting, seed=0)
                return {"arm": arm, **setting, **validation_score(ctx, model, name)}

            scores.append(run_job(ctx, name, work, {"arm": arm, **setting}))
        best = max(scores, key=lambda r: r["nDCG@10"])
        chosen[arm] = {"lr": best["lr"], "epochs": best.get("epochs")}
    print(f"stage-2 settings chosen on validation: {chosen}")
    return chosen


def arm_result(ctx: Context, run: int, seed: int, ql_seed: int = 0) -> dict:
    """One arm at one seed on the test claims. The ablations (5, 6) take LLM-QL's chosen settings."""
    label, variant = ARMS[run]
    setting = tune_cl(ctx)["baseline" if variant == "baseline" else "asic"]
    name = f"run{run}-seed{seed}" + (f"-ql{ql_seed}" if ql_seed else "")
    first = (run, seed, ql_seed) == (4, ctx.protocol.seeds[0], 0)

    def work():
        model = stage2_model(ctx, variant, setting, seed, ql_seed)
        index = build_index(ctx, str(model), name, ctx.data, end_states=first)  # runs 7-8 reuse it
        summary = run_eval(ctx, name, index, ctx.data, "test", ("dense",), model=str(model))
        return {
            "run": run,
            "label": label,
            "seed": seed,
            "ql_seed": ql_seed,
            **setting,
            "model": model.name,
            **metrics(summary, "dense"),
        }

    return run_job(ctx, name, work, {"run": run, "seed": seed, **({"ql_seed": ql_seed} if ql_seed else {})})


def tune_ql_weight(ctx: Context, retriever: Path) -> float:
    """Weight of the QL score in hybrid + QL, by validation nDCG@10 on the validation slice."""
    grid = ctx.protocol.ql_weight_grid
    if len(grid) == 1:
        return grid[0]

    def work():
        corpus = validation_corpus(ctx)
        index = build_index(ctx, str(retriever), "val-hybrid-ql", corpus, end_states=True)
        runs = ("hybrid+ql",)
        summary = run_eval(
            ctx, "val-hybrid-ql", index, corpus, "validation", runs, str(retriever), str(retriever), grid
        )
        curve = {f"{w:g}": summary["runs"][f"hybrid+ql@{w:g}"]["metrics"] for w in grid}
        return {"metrics_by_weight": curve, "chosen": float(max(curve, key=lambda w: curve[w]["nDCG@10"]))}

    return run_job(ctx, "tune-ql-weight", work)["chosen"]


def rerank_runs(ctx: Context) -> dict:
    """Run 7 (hybrid BM25 + LLM-QL, and hybrid + QL re-ranking) and run 8 (QL vs Dirichlet QL on BM25's top-k),
    with the seed-0 LLM-QL retriever and its stage-1 model (one directory is both)."""
    grid = ctx.protocol.ql_weight_grid
    retriever = stage2_model(ctx, "asic", tune_cl(ctx)["asic"], ctx.protocol.seeds[0])
    weight = tune_ql_weight(ctx, retriever)
    index = build_index(ctx, str(retriever), f"run4-seed{ctx.protocol.seeds[0]}", ctx.data, end_states=True)
    # every weight from one QL pass: the validation-chosen one is reported, the others kept for information only
    runs = ("bm25", "dense", "hybrid", "hybrid+ql", "ql", "ql-dirichlet")
    summary = run_eval(ctx, "run7-8", index, ctx.data, "test", runs, str(retriever), str(retriever), grid)
    out = {r: metrics(summary, r) for r in summary["runs"] if not r.startswith("hybrid+ql@")}
    out["hybrid+ql"] = metrics(summary, f"hybrid+ql@{weight:g}")
    curve = {f"{w:g}": summary["runs"][f"hybrid+ql@{w:g}"]["metrics"] for w in grid}
    return {"ql_weight": weight, "runs": out, "test_weight_curve_not_used_for_choice": curve}


def longer_run8_name(ctx: Context) -> str:
    return f"run8-passages{ctx.protocol.ql_max_passage_tokens}"


def ql_passage_length(ctx: Context) -> dict:
    """Run 8 again with documents cut at stage 1's passage length instead of the index's, for the cached [E]
    states that QL re-ranks from (same weights, a longer passage budget; BM25 and word QL are unchanged)."""
    P = ctx.protocol
    retriever = stage2_model(ctx, "asic", tune_cl(ctx)["asic"], P.seeds[0])
    name = f"{retriever.name}-passages{P.ql_max_passage_tokens}"
    out = model_view(retriever, ctx.work / "models" / name, max_passage_tokens=P.ql_max_passage_tokens)
    index = build_index(ctx, str(out), out.name, ctx.data, end_states=True)
    runs = ("bm25", "dense", "ql", "ql-dirichlet")
    summary = run_eval(ctx, longer_run8_name(ctx), index, ctx.data, "test", runs, model=str(out), ql_model=str(out))
    return {"max_passage_tokens": P.ql_max_passage_tokens, "runs": {r: metrics(summary, r) for r in runs}}


def baselines(ctx: Context) -> None:
    """Runs 1 (BM25) and 2 (the untrained backbone), and the off-the-shelf reference where the protocol has it."""
    zeroshot = zeroshot_model(ctx)

    def bm25() -> dict:
        index = build_index(ctx, str(zeroshot), zeroshot.name, ctx.data)
        return {
            "run": 1,
            "label": "BM25 (embedded engine)",
            **metrics(run_eval(ctx, "bm25", index, ctx.data, "test", ("bm25",)), "bm25"),
        }

    def untrained() -> dict:
        index = build_index(ctx, str(zeroshot), zeroshot.name, ctx.data)
        summary = run_eval(ctx, "zeroshot", index, ctx.data, "test", ("dense",), model=str(zeroshot))
        return {"run": 2, "label": f"{ctx.model} untrained (zero-shot)", **metrics(summary, "dense")}

    run_job(ctx, "run1-bm25", bm25)
    run_job(ctx, "run2-zeroshot", untrained)
    if ctx.protocol.minilm_reference:
        run_job(ctx, "reference-minilm", lambda: minilm_reference(ctx))


def main_runs(ctx: Context) -> None:
    """Every run of the protocol, the central comparison (runs 3-4, 7-8) first."""
    P = ctx.protocol
    baselines(ctx)
    for seed in P.seeds:
        for run in (3, 4):
            arm_result(ctx, run, seed)
        if seed == P.seeds[0]:
            run_job(ctx, "run7-8-rerank", lambda: rerank_runs(ctx))
    for ql_seed in P.ql_seeds[1:]:  # run 4 on other stage-1 seeds: the stage-1 spread
        for seed in P.seeds:
            arm_result(ctx, 4, seed, ql_seed)
    if P.ablations:
        for seed in P.seeds:
            for run in (5, 6):
                arm_result(ctx, run, seed)
    if P.passages_check:
        run_job(ctx, longer_run8_name(ctx), lambda: ql_passage_length(ctx))
