"""`evaluate`: run each retrieval configuration over a query set through the same backend, write TREC run
files, and score them with ir-measures (nDCG@10, MRR@10, Recall@100, and Recall@1000 when the depth allows).

Runs: bm25, dense, hybrid, hybrid+ql (QL re-rank of the fused top-n), ql (QL re-rank of BM25's top-n, QL score
alone), ql-dirichlet (Dirichlet-smoothed word QL re-ranking the same BM25 list) and tuned (exactly what a searcher
does by default with the model's search.json: see `llmql tune`). Several QL weights for
hybrid+ql cost one QL pass: each query keeps its fused and QL scores and every weight re-ranks those numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from llmql.connectors.registry import open_backend
from llmql.export.runtime import load_encoder, load_ql_scorer
from llmql.plugin.fusion import rerank_head
from llmql.plugin.search import HybridSearcher, SearchConfig, default_config
from llmql.plugin.search_settings import read_search_settings
from llmql.plugin.significance import versus
from llmql.plugin.word_ql import DirichletQL
from llmql.train.core.device import resolve_device
from llmql.train.data import load_beir

RUNS = ("bm25", "dense", "hybrid", "hybrid+ql", "ql", "ql-dirichlet", "tuned")


@dataclass(frozen=True)
class EvalConfig:
    data: str
    split: str = "test"
    backend: str = "embedded"
    url: str = "./llmql-index"
    index: str = "llmql"
    model: str | None = None  # export or model directory: encodes queries (dense, hybrid)
    ql_model: str | None = None  # export with --ql-scorer or stage-1/2 directory (hybrid+ql, ql)
    runs: tuple[str, ...] = ("bm25", "dense", "hybrid")
    depth: int = 100  # first-stage candidates per query (and run-file depth)
    # None: the model's tuned setting (search.json beside --model), else the untuned default (100, rrf, 0.5)
    rerank_depth: int | None = None
    fusion: str | None = None
    ql_weights: tuple[float, ...] | None = None  # hybrid+ql: weight(s) of the QL score against the fused score
    ql_path: str = "auto"
    dirichlet_mu: float = 1000.0
    out_dir: str = "llmql-eval"
    max_queries: int | None = None
    runtime: str = "auto"  # for exports: onnx, torch (on the source model), or auto
    device: str = "auto"  # auto, cpu, cuda, cuda:N (llmql.train.core.device.resolve_device)
    backend_options: dict = field(default_factory=dict)


def measures(depth: int):
    import ir_measures

    out = [ir_measures.nDCG @ 10, ir_measures.RR @ 10, ir_measures.R @ 100]
    if depth >= 1000:
        out.append(ir_measures.R @ 1000)
    return out


def metric_name(measure) -> str:
    return {"nDCG@10": "nDCG@10", "RR@10": "MRR@10", "R@100": "R@100", "R@1000": "R@1000"}.get(
        str(measure), str(measure)
    )


def score_run(
    qrels: dict[str, dict[str, int]],
    run: dict[str, dict[str, float]],
    depth: int,
    queries: Iterable[str] | None = None,
) -> dict:
    """Aggregate and per-query metrics over exactly `queries` (default: the run's): a query with no results
    scores zero, one without judgments cannot be scored and is left out (counted in `unjudged`). Every
    aggregate is the mean of the per-query values it sits beside, never a sum over queries that were not run."""
    import ir_measures

    ms = measures(depth)
    scored = sorted({q for q in (run if queries is None else queries) if q in qrels})
    unjudged = len({*(run if queries is None else queries)} - set(scored))
    per_query = {q: {metric_name(m): 0.0 for m in ms} for q in scored}
    answered = {q: run[q] for q in scored if run.get(q)}
    for m in ir_measures.iter_calc(ms, {q: qrels[q] for q in answered}, answered):
        per_query[m.query_id][metric_name(m.measure)] = float(m.value)
    means = {
        metric_name(m): float(np.mean([per_query[q][metric_name(m)] for q in scored])) if scored else 0.0 for m in ms
    }
    return {"metrics": means, "per_query": per_query, "queries": len(scored), "unjudged": unjudged}


def write_trec(path: Path, run: dict[str, dict[str, float]], name: str) -> None:
    lines = []
    for qid, docs in run.items():
        for rank, (doc, score) in enumerate(sorted(docs.items(), key=lambda x: (-x[1], x[0])), start=1):
            lines.append(f"{qid} Q0 {doc} {rank} {score:.6f} {name}")
    path.write_text("\n".join(lines) + "\n")


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    """Every run in `cfg.runs` over the split's judged queries; writes NAME.run files and summary.json."""

    _check(cfg)
    device = resolve_device(cfg.device)
    data = load_beir(Path(cfg.data), cfg.split)
    qids = sorted(data.qrels)[: cfg.max_queries] if cfg.max_queries else sorted(data.qrels)
    backend = open_backend(cfg.backend, cfg.url, create=False, **cfg.backend_options)
    backend.index_info(cfg.index)  # fails clearly, naming the indexes there, if the index does not exist
    needs_encoder = {"dense", "hybrid", "hybrid+ql", "tuned"} & set(cfg.runs)
    encoder = load_encoder(cfg.model, runtime=cfg.runtime, device=device) if needs_encoder else None
    scorer = (
        load_ql_scorer(cfg.ql_model, runtime=cfg.runtime, device=device)
        if {"hybrid+ql", "ql", "tuned"} & set(cfg.runs) and cfg.ql_model
        else None
    )
    dirichlet = None
    if "ql-dirichlet" in cfg.runs:
        dirichlet = DirichletQL(((d.id, f"{d.title} {d.text}") for d in data.corpus.values()), mu=cfg.dirichlet_mu)

    settings = _settings(cfg)
    configs = _run_configs(cfg, settings, encoder, scorer)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"config": asdict(cfg), "settings": asdict(settings), "queries": len(qids), "runs": {}}
    k = max(cfg.depth, settings.rerank_depth, configs["tuned"].rerank_depth)  # hybrid+ql re-weights the whole head
    for name in cfg.runs:
        searcher = HybridSearcher(backend, cfg.index, encoder, scorer, configs[name])
        results, latencies = {}, []
        for qid in tqdm(qids, desc=name, unit="q", disable=not progress):
            start = time.perf_counter()
            results[qid] = searcher.search(data.queries[qid], k=k)
            if name == "ql-dirichlet":
                results[qid] = _dirichlet_rerank(results[qid], dirichlet, data.queries[qid], settings.rerank_depth)
            latencies.append((time.perf_counter() - start) * 1000)
        runs = _ranked_runs(name, results, settings.ql_weights, cfg.depth)
        for run_name, run in runs.items():
            write_trec(out_dir / f"{run_name}.run", run, run_name)
            scored = score_run(data.qrels, run, cfg.depth, qids)
            scored["latency_ms"] = {
                "p50": float(np.percentile(latencies, 50)),
                "p95": float(np.percentile(latencies, 95)),
            }
            summary["runs"][run_name] = scored
    _compare_with_bm25(summary["runs"])
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _ranked_runs(name: str, results: dict, ql_weights: tuple[float, ...], depth: int) -> dict[str, dict]:
    """The TREC runs (name -> qid -> doc -> score, top `depth`) of one searched run: itself, or for hybrid+ql one
    run per QL weight, re-weighted from the same searches (named `hybrid+ql@W` when there are several)."""
    if name != "hybrid+ql":
        return {name: {q: _top({h.id: h.score for h in r.hits}, depth) for q, r in results.items()}}
    return {
        ("hybrid+ql" if len(ql_weights) == 1 else f"hybrid+ql@{w:g}"): {
            q: _top(_reweighted(r, w), depth) for q, r in results.items()
        }
        for w in ql_weights
    }


@dataclass(frozen=True)
class RunSettings:
    """What the fused and re-ranked runs use: explicit options, else the model's search.json, else defaults."""

    fusion: str
    weights: dict[str, float]
    rerank_depth: int
    ql_weights: tuple[float, ...]
    source: str  # where they came from, for the summary


def _settings(cfg: EvalConfig) -> RunSettings:

    tuned = (read_search_settings(cfg.model) or {}).get("search", {})
    depth = cfg.rerank_depth or tuned.get("rerank_depth") or 100
    weights = cfg.ql_weights or ((tuned["ql_weight"],) if tuned.get("rerank_depth") else (0.5,))
    fusion = cfg.fusion or tuned.get("fusion", "rrf")
    fused_weights = tuned.get("weights", {}) if cfg.fusion is None else {}
    return RunSettings(fusion, fused_weights, depth, tuple(weights), "search.json" if tuned else "defaults")


def _run_configs(cfg: EvalConfig, settings: RunSettings, encoder, scorer) -> dict:

    base = SearchConfig(bm25_k=cfg.depth, knn_k=cfg.depth, ql_path=cfg.ql_path)
    hybrid = replace(
        base, mode="hybrid", fusion=settings.fusion, **({"weights": settings.weights} if settings.weights else {})
    )
    return {
        "bm25": replace(base, mode="bm25"),
        "dense": replace(base, mode="dense"),
        "hybrid": hybrid,
        "hybrid+ql": replace(hybrid, rerank_depth=settings.rerank_depth, ql_weight=1.0),
        "ql": replace(base, mode="bm25", rerank_depth=settings.rerank_depth, ql_weight=1.0),
        "ql-dirichlet": replace(base, mode="bm25"),
        "tuned": replace(default_config(encoder, scorer), bm25_k=cfg.depth, knn_k=cfg.depth, ql_path=cfg.ql_path),
    }


def _compare_with_bm25(runs: dict) -> None:
    """Each run's paired nDCG@10 difference from BM25 over the queries, with a 95% bootstrap interval."""

    if "bm25" not in runs:
        return
    for name, scored in runs.items():
        if name != "bm25":
            diff = versus(scored["per_query"], runs["bm25"]["per_query"], "nDCG@10")
            scored["vs_bm25"] = {"ndcg@10": diff.mean, "low": diff.low, "high": diff.high}


def _check(cfg: EvalConfig) -> None:
    unknown = set(cfg.runs) - set(RUNS)
    if unknown:
        raise ValueError(f"unknown run(s) {sorted(unknown)}; choose from {', '.join(RUNS)}")
    needs_encoder = {"dense", "hybrid", "hybrid+ql", "tuned"} & set(cfg.runs)
    needs_ql = {"hybrid+ql", "ql"} & set(cfg.runs)
    if needs_encoder and not cfg.model:
        raise ValueError(f"runs {sorted(needs_encoder)} need --model (the encoder)")
    if needs_ql and not cfg.ql_model:
        raise ValueError(f"runs {sorted(needs_ql)} need --ql-model (an export with --ql-scorer or a model dir)")
    if cfg.ql_weights is not None and (not cfg.ql_weights or any(not 0.0 <= w <= 1.0 for w in cfg.ql_weights)):
        raise ValueError(f"QL weights must lie in [0, 1], got {list(cfg.ql_weights)}")


def _top(scores: dict[str, float], depth: int) -> dict[str, float]:
    return dict(sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:depth])


def _reweighted(result, alpha: float) -> dict[str, float]:
    """A hybrid+ql result searched with the QL score alone, re-ranked at weight `alpha` (same as searching with it).

    The head is the set of hits with a QL score; the tail keeps its fused order below it.
    """
    head = [h.id for h in result.hits if "ql" in h.stages]
    tail = [h.id for h in result.hits if "ql" not in h.stages]
    fused = {h.id: h.stages["fused"] for h in result.hits}
    ql = {h.id: h.stages["ql"] for h in result.hits if "ql" in h.stages}
    return rerank_head(fused, ql, head, tail, alpha)


def _dirichlet_rerank(result, dirichlet, query: str, depth: int):
    """BM25's top `depth` re-scored by Dirichlet-smoothed word QL; the rest keep their order below them."""
    ids = [h.id for h in result.hits]
    rescored = dirichlet.score(query, ids[:depth])
    scores = rerank_head(dict.fromkeys(ids, 0.0), rescored, ids[:depth], ids[depth:], alpha=1.0)
    hits = []
    for h in result.hits:
        stages = {**h.stages, "ql-dirichlet": rescored[h.id]} if h.id in rescored else h.stages
        hits.append(replace(h, score=scores[h.id], stages=stages))
    return replace(result, hits=sorted(hits, key=lambda h: (-h.score, h.id)))


def format_table(summary: dict) -> str:
    """A plain-text table of the aggregate metrics, one row per run, and beside each its paired nDCG@10
    difference from BM25 with the 95% bootstrap interval (where BM25 was run)."""
    runs = summary["runs"]
    names = list(next(iter(runs.values()))["metrics"]) if runs else []
    lines = [f"{'run':<14}" + "".join(f"{n:>10}" for n in names) + f"{'p50 ms':>10}   nDCG@10 vs BM25 [95% CI]"]
    for run, values in runs.items():
        versus = values.get("vs_bm25")
        lines.append(
            f"{run:<14}"
            + "".join(f"{values['metrics'][n]:>10.4f}" for n in names)
            + f"{values['latency_ms']['p50']:>10.1f}"
            + (f"   {versus['ndcg@10']:+.4f} [{versus['low']:+.4f}, {versus['high']:+.4f}]" if versus else "")
        )
    return "\n".join(lines)
