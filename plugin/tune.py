"""`tune`: choose the fusion, QL weight and re-rank depth for a model on held-out queries and write them to
`search.json` beside it (see `llmql.plugin.tuning` for the grid and `llmql.plugin.search_settings` for the file).

The queries must not be the ones a model is judged on later: tune on a dev split, or on training queries held
out of training (`--queries FILE`), never on the test queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from llmql.connectors.registry import open_backend
from llmql.export.runtime import load_encoder, load_ql_scorer
from llmql.plugin.evaluate import score_run
from llmql.plugin.index_check import check_models
from llmql.plugin.rerank import QLReranker
from llmql.plugin.search import SearchConfig
from llmql.plugin.search_settings import save_search_settings, tuned_fields
from llmql.plugin.tuning import DEPTHS, Fusion, Trial, choose_fusion, choose_rerank, fused_run
from llmql.train.core.device import resolve_device
from llmql.train.core.errors import DataError
from llmql.train.data import load_beir, read_id_file


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
