"""`tune`: choose the fusion, QL weight and re-rank depth for a model on held-out queries and write them to
`search.json` beside it (`llmql.plugin.search_settings` has the file). The grid and the choices are the pure
functions at the end of this module.

The queries must not be the ones a model is judged on later: tune on a dev split, or on training queries held
out of training (`--queries FILE`), never on the test queries.

A briefly trained dense retriever fused with BM25 at fixed equal weights can rank below BM25 alone; so can a QL
re-rank at a fixed weight. The tuner searches a small grid (a convex combination of min-max-normalised BM25 and
dense scores from pure BM25 to pure dense, and RRF; then the QL weight and re-rank depth) by nDCG@10, and keeps
the simpler setting unless another is strictly better, so a retriever that does not help is given weight 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from llmql.connectors.registry import open_backend
from llmql.export.runtime import load_encoder, load_ql_scorer
from llmql.plugin.evaluate import score_run
from llmql.plugin.fusion import fuse, rerank_head
from llmql.plugin.index_check import check_models
from llmql.plugin.rerank import QLReranker
from llmql.plugin.search import SearchConfig
from llmql.plugin.search_settings import save_search_settings, tuned_fields
from llmql.train.core.device import resolve_device
from llmql.train.core.errors import DataError
from llmql.train.data import load_beir, read_id_file

Scores = Mapping[str, float]
DENSE_WEIGHTS = tuple(i / 10 for i in range(11))  # 0: BM25 alone ... 1: dense alone
QL_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)  # 0: no QL ... 1: QL alone over the head
DEPTHS = (10, 20, 50, 100)


@dataclass(frozen=True)
class TuneConfig:
    data: str
    model: str  # export or model directory: encodes the queries; search.json goes beside it (or to `out`)
    split: str = "dev"
    queries_file: str | None = None  # only these query ids (one per line): training queries held out of training
    ql_model: str | None = None  # tunes the QL weight and depth too
    backend: str = "embedded"
    url: str = "./llmql-index"
    index: str = "llmql"
    depth: int = 100  # candidates from each first stage
    out: str | None = None
    max_queries: int | None = None
    rerank_depths: tuple[int, ...] = DEPTHS  # re-rank depths tried (QL scores the fused top max(depths))
    runtime: str = "auto"
    device: str = "auto"  # auto, cpu, cuda, cuda:N (llmql.train.core.device.resolve_device)
    backend_options: dict = field(default_factory=dict)


def tune(cfg: TuneConfig, progress: bool = True) -> dict:
    """Tune, write search.json, and return what was written."""

    device = resolve_device(cfg.device)
    queries, qrels = _held_out(cfg)
    backend = open_backend(cfg.backend, cfg.url, create=False, **cfg.backend_options)
    encoder = load_encoder(cfg.model, runtime=cfg.runtime, device=device)
    scorer = load_ql_scorer(cfg.ql_model, runtime=cfg.runtime, device=device) if cfg.ql_model else None
    ql_path = check_models(backend, cfg.index, encoder, scorer)

    def judge(run: dict) -> float:
        return _ndcg10(qrels, run)

    stages = _first_stages(backend, cfg.index, encoder, queries, cfg.depth, progress)
    fusion, fusion_trials = choose_fusion(stages, judge)
    fused = fused_run(stages, fusion)
    depth, weight, rerank_trials = 0, 0.0, []
    if scorer is not None:
        reranker = QLReranker(scorer, backend, cfg.index, ql_path)
        ql = {
            q: reranker.rerank(queries[q], _top_ids(fused[q], max(cfg.rerank_depths))).scores
            for q in tqdm(fused, desc="tune: QL", unit="q", disable=not progress)
        }
        depth, weight, rerank_trials = choose_rerank(fused, ql, judge, cfg.rerank_depths)
    config = SearchConfig(
        mode=fusion.mode,
        fusion="rrf" if fusion.method == "rrf" else "minmax",
        weights=fusion.weights,
        rerank_depth=depth,
        ql_weight=weight if depth else SearchConfig().ql_weight,
    )
    report = _report(cfg, len(queries), fusion, fusion_trials, depth, weight, rerank_trials, scorer is not None)
    save_search_settings(cfg.out or encoder.directory or cfg.model, config, report)
    return {"search": tuned_fields(config), **report}


def _held_out(cfg: TuneConfig) -> tuple[dict[str, str], dict[str, dict[str, int]]]:

    data = load_beir(Path(cfg.data), cfg.split)
    keep = read_id_file(cfg.queries_file) if cfg.queries_file else set(data.qrels)
    qids = sorted(q for q in data.qrels if q in keep)[: cfg.max_queries]
    if not qids:
        raise DataError(
            f"{cfg.data}: no judged {cfg.split!r} queries to tune on" + (" in the ids file" if cfg.queries_file else "")
        )
    return {q: data.queries[q] for q in qids}, {q: data.qrels[q] for q in qids}


def _first_stages(backend, index: str, encoder, queries: dict[str, str], depth: int, progress: bool) -> dict:
    """{query: {"bm25": scores, "dense": scores}} of each retriever's top `depth`."""
    qids = list(queries)
    vectors = encoder.encode_queries([queries[q] for q in qids])
    stages = {}
    for qid, vector in tqdm(
        list(zip(qids, vectors, strict=True)), desc="tune: retrieve", unit="q", disable=not progress
    ):
        stages[qid] = {
            "bm25": {h.id: h.score for h in backend.bm25(index, queries[qid], depth)},
            "dense": {h.id: h.score for h in backend.knn(index, vector, depth)},
        }
    return stages


def _top_ids(scores: dict[str, float], n: int) -> list[str]:
    return sorted(scores, key=lambda d: (-scores[d], d))[:n]


def _ndcg10(qrels: dict, run: dict) -> float:

    top = {q: {d: scores[d] for d in _top_ids(scores, 100)} for q, scores in run.items()}
    return score_run(qrels, top, 100)["metrics"]["nDCG@10"]


def _report(cfg, n: int, fusion: Fusion, fusion_trials, depth, weight, rerank_trials, has_ql: bool) -> dict:
    bm25 = fusion_trials[0].ndcg10
    chosen = max([t.ndcg10 for t in fusion_trials] + [t.ndcg10 for t in rerank_trials])
    notes = []
    if fusion.mode == "bm25":
        notes.append("dense retrieval did not beat BM25 on these queries: BM25 keeps weight 1 (dense weight 0)")
    if has_ql and depth == 0:
        notes.append("QL re-ranking did not beat the fused ranking on these queries: re-ranking is off")
    if n < 50:
        notes.append(f"only {n} queries: differences of a few points of nDCG@10 are noise at this size")

    def rows(trials: list[Trial]) -> list[dict]:
        return [{**t.setting, "ndcg@10": round(t.ndcg10, 5)} for t in trials]

    return {
        "tuned_on": {"data": str(cfg.data), "split": cfg.split, "queries_file": cfg.queries_file, "queries": n},
        "figures": {
            "bm25": round(bm25, 5),
            "chosen": round(chosen, 5),
            "fusion": rows(fusion_trials),
            "rerank": rows(rerank_trials),
        },
        "notes": notes,
    }


# -- the grid, and choosing from it (pure functions over per-query scores) -------------------------------------


@dataclass(frozen=True)
class Fusion:
    method: str  # "minmax" (convex combination) or "rrf"
    dense_weight: float = 0.5  # for minmax; RRF weighs both lists equally

    @property
    def weights(self) -> dict[str, float]:
        if self.method == "rrf":
            return {"bm25": 1.0, "dense": 1.0}
        return {"bm25": round(1.0 - self.dense_weight, 6), "dense": self.dense_weight}

    @property
    def mode(self) -> str:
        """What a searcher runs: a pure end needs only one retriever."""
        if self.method == "minmax" and self.dense_weight == 0.0:
            return "bm25"
        if self.method == "minmax" and self.dense_weight == 1.0:
            return "dense"
        return "hybrid"


@dataclass(frozen=True)
class Trial:
    setting: dict
    ndcg10: float


def fusion_grid() -> list[Fusion]:
    """Simplest first: BM25 alone, then rising dense weight, then RRF (ties keep the earlier setting)."""
    return [Fusion("minmax", w) for w in DENSE_WEIGHTS] + [Fusion("rrf")]


def fused_run(stages: Mapping[str, Mapping[str, Scores]], fusion: Fusion) -> dict[str, dict[str, float]]:
    """{query: {"bm25": scores, "dense": scores}} -> {query: fused scores} (one stage: its own scores)."""
    run = {}
    for qid, by_stage in stages.items():
        if fusion.mode == "bm25" or "dense" not in by_stage:
            run[qid] = dict(by_stage["bm25"])
        elif fusion.mode == "dense":
            run[qid] = dict(by_stage["dense"])
        else:
            run[qid] = fuse(by_stage, fusion.method, fusion.weights)
    return run


def choose_fusion(stages, judge) -> tuple[Fusion, list[Trial]]:
    """The grid's best fusion by `judge(run) -> nDCG@10`; BM25 alone unless something strictly beats it."""
    trials, best, best_score = [], None, float("-inf")
    for fusion in fusion_grid():
        score = judge(fused_run(stages, fusion))
        trials.append(Trial({"method": fusion.method, "dense_weight": fusion.dense_weight}, score))
        if score > best_score + 1e-12:
            best, best_score = fusion, score
    return best, trials


def reranked_run(
    fused: Mapping[str, Scores], ql: Mapping[str, Scores], depth: int, weight: float
) -> dict[str, dict[str, float]]:
    """Each query's fused top `depth` re-scored at QL weight `weight`, the rest below it in fused order."""
    run = {}
    for qid, scores in fused.items():
        order = sorted(scores, key=lambda d: (-scores[d], d))
        head, tail = order[:depth], order[depth:]
        run[qid] = rerank_head(scores, {d: ql[qid][d] for d in head}, head, tail, weight) if head else {}
    return run


def choose_rerank(fused, ql, judge, depths: Sequence[int] = DEPTHS) -> tuple[int, float, list[Trial]]:
    """The best (depth, QL weight); (0, 0.0), no re-ranking, unless some setting strictly beats the fused run.
    `ql[q]` must score at least each query's top max(depths) fused documents."""
    base = judge(fused)
    trials = [Trial({"depth": 0, "ql_weight": 0.0}, base)]
    best, best_score = (0, 0.0), base
    for depth in depths:
        for weight in QL_WEIGHTS[1:]:
            score = judge(reranked_run(fused, ql, depth, weight))
            trials.append(Trial({"depth": depth, "ql_weight": weight}, score))
            if score > best_score + 1e-12:
                best, best_score = (depth, weight), score
    return best[0], best[1], trials
