"""bench.quality: its statistics on hand-computed examples, its job cache, its split, and the dry run of the GPU
preset (every step on a tiny random model and the toy collection, on the CPU)."""

import json
import math
import time
from dataclasses import replace

import pytest

from bench.quality.data import held_out
from bench.quality.jobs import job_key, run_job
from bench.quality.presets import DRY, Context
from bench.quality.statistics import paired, seed_mean, seed_spread


def test_paired_comparison_on_hand_computed_differences():
    a, b = {"q1": 0.4, "q2": 0.8, "q3": 0.6, "only-a": 1.0}, {"q1": 0.3, "q2": 0.5, "q3": 0.4}
    out = paired(a, b)  # differences 0.1, 0.3, 0.2 on the 3 shared queries
    assert out["queries"] == 3 and out["mean_difference"] == pytest.approx(0.2)
    t = 0.2 / (0.1 / math.sqrt(3))  # mean / (sample sd / sqrt n)
    assert out["t_test_p"] == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-6)  # Student t, 2 df, two-sided
    # the bootstrap means are means of 3 draws from {0.1, 0.2, 0.3}: never outside them, and around 0.2
    assert 0.1 - 1e-9 <= out["ci95"][0] < 0.2 < out["ci95"][1] <= 0.3 + 1e-9
    assert paired(a, b) == out  # seeded
    even = paired({"x": 1.0, "y": 0.5, "z": 0.0}, {"x": 0.5, "y": 0.5, "z": 0.5})  # differences +0.5, 0, -0.5
    assert even["mean_difference"] == pytest.approx(0.0) and even["t_test_p"] == pytest.approx(1.0)
    assert paired({"x": 1.0, "y": 1.0}, {"x": 1.0, "y": 1.0})["t_test_p"] == 1.0  # no difference at all
    with pytest.raises(ValueError, match="at least 2"):
        paired({"x": 1.0}, {"x": 0.0})


def test_seed_spread_and_seed_mean():
    assert seed_spread([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02)))  # sample sd: sum of squares / (n - 1)
    assert seed_spread([0.5]) == (0.5, None)  # one seed has no spread, not 0
    by_seed = {0: {"q1": 0.2, "q2": 1.0}, 1: {"q1": 0.4, "q2": 0.0}, 2: {"q1": 0.9, "q2": 0.9}}
    assert seed_mean(by_seed, [0, 1]) == pytest.approx({"q1": 0.3, "q2": 0.5})


def test_validation_split_is_stable_and_near_its_share():
    ids = [f"claim-{i}" for i in range(2000)]
    held = held_out(ids, 0.15)
    assert held == held_out(list(reversed(ids)), 0.15)  # by id, not by order
    assert 0.12 < len(held) / len(ids) < 0.18


def _ctx(tmp_path) -> Context:
    return Context(protocol=DRY, work=tmp_path / "work", data=tmp_path / "data", model="tiny", jobs=tmp_path / "jobs")


def test_a_job_runs_once_per_whole_configuration(tmp_path):
    ctx, calls = _ctx(tmp_path), []

    def work():
        calls.append(1)
        return {"score": len(calls)}

    first = run_job(ctx, "run4-seed0", work, {"run": 4, "seed": 0})
    assert run_job(ctx, "run4-seed0", work, {"run": 4, "seed": 0}) == first and len(calls) == 1
    stored = json.loads((ctx.jobs / "run4-seed0.json").read_text())
    assert stored["key"] == job_key(ctx, "run4-seed0", {"run": 4, "seed": 0})
    changed = [
        replace(ctx, protocol=replace(DRY, cl_batch=DRY.cl_batch + 1)),  # any protocol setting
        replace(ctx, protocol=replace(DRY, ql_lr_grid=(1e-3,))),
        replace(ctx, model="other"),
    ]
    for n, other in enumerate(changed, start=2):
        assert run_job(other, "run4-seed0", work, {"run": 4, "seed": 0})["score"] == n  # stale: run again
    assert run_job(changed[-1], "run4-seed0", work, {"run": 4, "seed": 1})["score"] == 5  # its own arguments too
    keys = {job_key(c, "run4-seed0", {"run": 4, "seed": 0}) for c in [ctx, *changed]}
    assert len(keys) == 4


def test_dry_run_walks_every_step_of_the_gpu_preset(tiny_llama, tmp_path):
    """Runs 1-8, the stage-1 seeds, tuning of rate and epochs, the ablations, the longer-passage check, report."""
    from bench.quality.report import report
    from bench.quality.runs import main_runs
    from tests.toydata import write_toy_beir

    data = write_toy_beir(tmp_path / "toy")
    ctx = Context(
        protocol=DRY, work=tmp_path / "work", data=data, model=str(tiny_llama), jobs=tmp_path / "jobs", device="cpu"
    )
    start = time.perf_counter()
    main_runs(ctx)
    payload = report(ctx)
    assert time.perf_counter() - start < 600
    jobs = {p.stem for p in ctx.jobs.glob("*.json")}
    runs = {f"run{r}-seed{s}" for r in (3, 4, 5, 6) for s in DRY.seeds} | {f"run4-seed{s}-ql1" for s in DRY.seeds}
    assert runs | {"run1-bm25", "run2-zeroshot", "run7-8-rerank", "run8-passages48", "tune-ql-weight"} <= jobs
    assert len([j for j in jobs if j.startswith("tune-cl-")]) == 2 * len(DRY.cl_lr_grid) * len(DRY.cl_epochs_grid)
    assert {r["run"] for r in payload["rows"]} == {3, 4, 5, 6}
    assert set(payload["stage1_spread"]["per_stage1_seed"]) == {0, 1}
    assert "run4_vs_run3" in payload["comparisons"] and "hybrid_ql_vs_hybrid" in payload["comparisons"]
    before = {p.name: p.stat().st_mtime for p in ctx.jobs.glob("*.json")}
    main_runs(ctx)  # everything is done: nothing runs again
    assert {p.name: p.stat().st_mtime for p in ctx.jobs.glob("*.json")} == before


def test_the_time_plan_keeps_what_fits_in_order_of_worth():
    from bench.quality.comparison import TimePlan, plan_extras

    settings = [{"lr": 1e-4, "epochs": 2.0}, {"lr": 1e-4, "epochs": 4.0}, {"lr": 1e-3, "epochs": 2.0}]
    plan = TimePlan(100.0, costs={"stage2": [5.0], "validation": [1.0]})
    assert plan.estimate("stage2", 2.0) == 10.0 and plan.estimate("never") == float("inf")
    # 4 epochs cost 10 + 1, 2 epochs 5 + 1, another seed 5: budget 100 - keep
    assert plan_extras(settings, [0, 1], plan, keep=70) == [
        ("asic", settings[1], 0),
        ("baseline", settings[1], 0),
        ("asic", settings[2], 0),
    ]  # 11 + 11 + 6 = 28 <= 30; the next (6) would not fit
    everything = plan_extras(settings, [0, 1], plan, keep=0)
    assert everything[-2:] == [("asic", settings[0], 1), ("baseline", settings[0], 1)]
    assert plan_extras(settings, [0], TimePlan(100.0), keep=0) == []  # nothing measured yet: nothing is promised


def test_dry_comparison_makes_the_whole_table_within_its_time(tiny_llama, tmp_path, monkeypatch):
    """The GPU preset's timed comparison on a tiny random model and the toy collection (standing in for DL19
    too): every row on both collections, each with its paired intervals, and the time plan respected."""
    from bench.quality.comparison import ROWS, comparison, table
    from tests.toydata import write_toy_beir

    data = write_toy_beir(tmp_path / "toy")
    monkeypatch.setenv("LLMQL_BENCH_OOD", str(data))
    ctx = Context(
        protocol=DRY,
        work=tmp_path / "work",
        data=data,
        model=str(tiny_llama),
        jobs=tmp_path / "jobs",
        device="cpu",
        backend="memory",
        minutes=4.0,
    )
    start = time.perf_counter()
    result = comparison(ctx)
    assert time.perf_counter() - start < 4 * 60 + 60  # the budget and the margin the plan keeps
    for block in result["tables"].values():
        assert [r["label"] for r in block["rows"]] == [label for label, _, _ in ROWS]
        for row in block["rows"]:
            assert 0.0 <= row["nDCG@10"] <= 1.0
            assert ("vs_bm25" in row) == (row["run"] != "bm25")
        assert "vs_contrastive_only" not in block["rows"][1] and "vs_contrastive_only" in block["rows"][0]
    assert set(result["chosen"]) == {"asic", "baseline"} and result["seeds_trained"] == [0]
    assert "LLM-QL dense" in table(result)
