"""Tables from whatever jobs have finished, read plainly, and bench/results/quality[-gpu].json."""

from __future__ import annotations

import json

from bench.quality.presets import Context
from bench.quality.runs import ARMS, longer_run8_name
from bench.quality.statistics import paired, seed_mean, seed_spread

MEASURES = ("nDCG@10", "MRR@10", "R@100")


def finished(ctx: Context) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(ctx.jobs.glob("*.json"))}


def arm_rows(results: dict[str, dict]) -> tuple[list[dict], dict[int, dict[int, dict]]]:
    """Runs 3-6 over their stage-2 seeds (stage-1 seed 0): mean and spread; per-query nDCG@10 by seed."""
    rows, per_query = [], {}
    for run, (label, _) in ARMS.items():
        seeds = [r for k, r in sorted(results.items()) if k.startswith(f"run{run}-seed") and not r.get("ql_seed")]
        if not seeds:
            continue
        spread = {m: seed_spread([s["metrics"][m] for s in seeds]) for m in MEASURES}
        rows.append(
            {
                "run": run,
                "label": label,
                "seeds": [s["seed"] for s in seeds],
                "per_seed_ndcg10": [s["metrics"]["nDCG@10"] for s in seeds],
                **{f"{m}_mean": v[0] for m, v in spread.items()},
                **{f"{m}_std": v[1] for m, v in spread.items()},
            }
        )
        per_query[run] = {s["seed"]: s["per_query_ndcg10"] for s in seeds}
    return rows, per_query


def stage1_spread(results: dict[str, dict]) -> dict | None:
    """Run 4's nDCG@10 per stage-1 seed (each the mean over its stage-2 seeds), and the spread of those means."""
    by_ql: dict[int, list[float]] = {}
    for key, r in results.items():
        if key.startswith("run4-seed"):
            by_ql.setdefault(int(r.get("ql_seed", 0)), []).append(r["metrics"]["nDCG@10"])
    if len(by_ql) < 2:
        return None
    means = {q: seed_spread(v)[0] for q, v in sorted(by_ql.items())}
    mean, std = seed_spread(list(means.values()))
    return {"per_stage1_seed": means, "mean": mean, "stage1_std": std}


def comparisons(per_query: dict, rerank: dict | None, longer: dict | None) -> dict:
    out = {}
    # 4 against 3 is the question; 4 against 5 and 6 what each component adds; 5 and 6 against 3 whether stage 1
    # still helps without it. Only the seeds both arms have, so that no arm is compared against a smoother mean.
    for a, b in ((4, 3), (4, 5), (4, 6), (5, 3), (6, 3)):
        if a in per_query and b in per_query:
            shared = sorted(set(per_query[a]) & set(per_query[b]))
            if shared:
                both = paired(seed_mean(per_query[a], shared), seed_mean(per_query[b], shared))
                out[f"run{a}_vs_run{b}"] = {**both, "seeds": shared}
    runs = (rerank or {}).get("runs", {})
    for name, (a, b) in {
        "llm_ql_vs_dirichlet_ql": ("ql", "ql-dirichlet"),
        "hybrid_vs_bm25": ("hybrid", "bm25"),
        "hybrid_ql_vs_hybrid": ("hybrid+ql", "hybrid"),
    }.items():
        if a in runs and b in runs:
            out[name] = paired(runs[a]["per_query_ndcg10"], runs[b]["per_query_ndcg10"])
    if longer:
        runs_long, n = longer["runs"], longer["max_passage_tokens"]
        out[f"llm_ql_passages{n}_vs_dirichlet_ql"] = paired(
            runs_long["ql"]["per_query_ndcg10"], runs_long["ql-dirichlet"]["per_query_ndcg10"]
        )
        if "ql" in runs:
            out[f"llm_ql_passages{n}_vs_index_passages"] = paired(
                runs_long["ql"]["per_query_ndcg10"], runs["ql"]["per_query_ndcg10"]
            )
    return out


def _print_gap(rows: list[dict]) -> None:
    """The central question's bar: run 4 - run 3 against the spread over seeds."""
    by_run = {r["run"]: r for r in rows}
    if 3 in by_run and 4 in by_run:
        gap = by_run[4]["nDCG@10_mean"] - by_run[3]["nDCG@10_mean"]

        def spread(run: int) -> str:
            std = by_run[run]["nDCG@10_std"]
            return f"{std:.4f}" if std is not None else "n/a (one seed)"

        print(
            f"\nRun 4 - run 3, mean nDCG@10 over seeds: {gap:+.4f}; seed standard deviation "
            f"run 3 {spread(3)}, run 4 {spread(4)}"
        )


def _print_longer(longer: dict) -> None:
    print(
        f"\nRun 8 with {longer['max_passage_tokens']}-token passages in the index (QL's cached [E] states and "
        "dense; BM25 and word QL read the same text as before):\n\n"
        "| configuration | nDCG@10 | MRR@10 | R@100 |\n|---|---:|---:|---:|"
    )
    for name, block in longer["runs"].items():
        m = block["metrics"]
        print(f"| {name} | " + " | ".join(f"{m[x]:.4f}" for x in MEASURES) + " |")


def _print_main(results: dict, rows: list[dict]) -> None:
    print("| run | configuration | nDCG@10 | MRR@10 | R@100 | seeds | nDCG@10 per seed |")
    print("|---|---|---:|---:|---:|---:|---|")
    for key, label in (("run1-bm25", "1"), ("run2-zeroshot", "2"), ("reference-minilm", "ref")):
        if key in results:
            m = results[key]["metrics"]
            print(
                f"| {label} | {results[key]['label']} | " + " | ".join(f"{m[x]:.4f}" for x in MEASURES) + " | - | - |"
            )
    for r in rows:
        cells = " | ".join(
            f"{r[f'{m}_mean']:.4f}" + (f" ± {r[f'{m}_std']:.4f}" if r[f"{m}_std"] is not None else "") for m in MEASURES
        )
        per_seed = ", ".join(f"{v:.4f}" for v in r["per_seed_ndcg10"])
        print(f"| {r['run']} | {r['label']} | {cells} | {len(r['seeds'])} | {per_seed} |")


def _print_rerank(rerank: dict) -> None:
    print(
        f"\nRuns 7-8 (seed-0 LLM-QL retriever and its stage-1 model; QL weight {rerank['ql_weight']}):\n\n"
        "| configuration | nDCG@10 | MRR@10 | R@100 |\n|---|---:|---:|---:|"
    )
    for name in ("bm25", "dense", "hybrid", "hybrid+ql", "ql", "ql-dirichlet"):
        if name in rerank["runs"]:
            m = rerank["runs"][name]["metrics"]
            print(f"| {name} | " + " | ".join(f"{m[x]:.4f}" for x in MEASURES) + " |")
    curve = rerank.get("test_weight_curve_not_used_for_choice")
    if curve:
        cells = ", ".join(f"{w}: {m['nDCG@10']:.4f}" for w, m in curve.items())
        print(f"\nhybrid+ql nDCG@10 on test by QL weight (information only, not used to choose): {cells}")


def _print_tuning(results: dict) -> None:
    print("\nChoices on validation:\n")
    for key, t in sorted(results.items()):
        if key == "ql-nll-untrained":
            print(f"- held-out QL loss of the untrained backbone: {t['val_nll_per_token']:.3f}")
        elif key.startswith("tune-ql-lr"):
            print(f"- stage 1 at lr {t['lr']:g}: held-out QL loss {t['val_nll_per_token']:.3f} nats/token")
        elif key.startswith("tune-cl-"):
            epochs = f", {t['epochs']:g} epochs" if t.get("epochs") else ""
            print(f"- stage 2, {t['arm']} at lr {t['lr']:g}{epochs}: validation nDCG@10 {t['nDCG@10']:.4f}")
        elif key == "tune-ql-weight":
            curve = ", ".join(f"{w}: {m['nDCG@10']:.4f}" for w, m in t["metrics_by_weight"].items())
            print(f"- hybrid+QL weight: validation nDCG@10 {curve}; chosen {t['chosen']:g}")


def report(ctx: Context) -> dict:
    from bench.common import write_results

    results = finished(ctx)
    rows, per_query = arm_rows(results)
    _print_main(results, rows)
    _print_gap(rows)
    spread = stage1_spread(results)
    if spread:
        means = ", ".join(f"stage-1 seed {q}: {v:.4f}" for q, v in spread["per_stage1_seed"].items())
        print(f"\nRun 4 nDCG@10 by stage-1 seed (mean over stage-2 seeds): {means}; spread {spread['stage1_std']:.4f}")
    rerank, longer = results.get("run7-8-rerank"), results.get(longer_run8_name(ctx))
    if rerank:
        _print_rerank(rerank)
    if longer:
        _print_longer(longer)
    compared = comparisons(per_query, rerank, longer)
    print("\nPaired comparisons on per-query nDCG@10 (runs 3-6 averaged over the seeds both arms have):\n")
    for name, c in compared.items():
        seeds = f", seeds {', '.join(map(str, c['seeds']))}" if "seeds" in c else ""
        print(
            f"- {name}: {c['mean_difference']:+.4f} (95% bootstrap interval {c['ci95'][0]:+.4f} to "
            f"{c['ci95'][1]:+.4f}, paired t-test p = {c['t_test_p']:.3g}, {c['queries']} queries{seeds})"
        )
    _print_tuning(results)
    wall = {k: v.get("wall_seconds") for k, v in results.items()}
    print("\nWall time per job, minutes (train-*: training alone; the others include index and evaluation):\n")
    print(", ".join(f"{k} {v / 60:.1f}" for k, v in sorted(wall.items()) if v))
    payload = {
        "protocol": ctx.protocol.key_fields(),
        "rows": rows,
        "stage1_spread": spread,
        "comparisons": compared,
        "runs_7_8": rerank,
        "run_8_longer_passages": longer,
        "tuning": {k: v for k, v in results.items() if k.startswith("tune") or k == "ql-nll-untrained"},
        "wall_seconds": wall,
    }
    if ctx.protocol.name != "dry":  # a dry run must not overwrite the real figures
        write_results("quality" if ctx.protocol.name == "cpu" else f"quality-{ctx.protocol.name}", payload)
    return payload
