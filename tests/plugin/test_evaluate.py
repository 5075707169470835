import itertools
import math

import pytest

from llmql.plugin.evaluate import score_run, write_trec
from llmql.plugin.word_ql import DirichletQL


def test_metrics_match_values_computed_by_hand(tmp_path):
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d9": 2}}
    run = {"q1": {"d2": 0.9, "d1": 0.8, "d5": 0.7, "d3": 0.1}, "q2": {"d4": 1.0}}
    scored = score_run(qrels, run, depth=100)
    # q1: relevant at ranks 2 and 4. DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert scored["per_query"]["q1"]["nDCG@10"] == pytest.approx(ndcg_q1)
    assert scored["per_query"]["q1"]["MRR@10"] == pytest.approx(0.5)
    assert scored["per_query"]["q1"]["R@100"] == pytest.approx(1.0)
    assert scored["per_query"]["q2"]["nDCG@10"] == 0.0  # its one relevant document is not retrieved
    assert scored["metrics"]["nDCG@10"] == pytest.approx(ndcg_q1 / 2)
    assert scored["metrics"]["MRR@10"] == pytest.approx(0.25)
    assert "R@1000" not in scored["metrics"]
    write_trec(tmp_path / "x.run", run, "test")
    first = (tmp_path / "x.run").read_text().splitlines()[0].split()
    assert first == ["q1", "Q0", "d2", "1", "0.900000", "test"]


def test_dirichlet_ql_by_hand():
    # analysed tokens (stemmed, stop words removed): d1 = [kelp, kelp, forest], d2 = [rock]
    ql = DirichletQL([("d1", "kelp kelp forests"), ("d2", "rock")], mu=2.0)
    assert ql.docs["d1"] == {"kelp": 2, "forest": 1}
    scores = ql.score("the kelp", ["d1", "d2"])
    p_kelp = 2 / 4
    assert scores["d1"] == pytest.approx(math.log((2 + 2 * p_kelp) / (3 + 2)))
    assert scores["d2"] == pytest.approx(math.log((0 + 2 * p_kelp) / (1 + 2)))
    assert ql.score("unknownword", ["d1", "d2"]) == {"d1": 0.0, "d2": 0.0}


@pytest.mark.parametrize("weights", [(0.3,), (0.0, 0.3, 1.0)])
def test_weight_sweep_equals_searching_at_each_weight(synced, ql_export, toy_beir, tmp_path, weights):
    """One QL pass re-weighted per weight gives exactly the ranking of a search at that weight (head and tail)."""
    from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
    from llmql.plugin.evaluate import EvalConfig, evaluate
    from llmql.plugin.search import HybridSearcher, SearchConfig
    from llmql.train.data import load_beir

    backend, index = synced
    cfg = EvalConfig(
        data=str(toy_beir),
        backend=backend.name,
        url=backend.location,
        index=index,
        model=str(ql_export),
        ql_model=str(ql_export),
        runs=("hybrid+ql",),
        depth=12,
        rerank_depth=5,
        ql_weights=weights,
        runtime="onnx",
        out_dir=str(tmp_path / "eval"),
    )
    summary = evaluate(cfg, progress=False)
    names = ["hybrid+ql"] if len(weights) == 1 else [f"hybrid+ql@{w:g}" for w in weights]
    assert list(summary["runs"]) == names
    data = load_beir(toy_beir, "test")
    encoder, scorer = OnnxEncoder.from_dir(ql_export), OnnxQLScorer.from_dir(ql_export)
    for name, weight in zip(names, weights, strict=True):
        lines = (tmp_path / "eval" / f"{name}.run").read_text().splitlines()
        served = HybridSearcher(
            backend, index, encoder, scorer, SearchConfig(bm25_k=12, knn_k=12, rerank_depth=5, ql_weight=weight)
        )
        for qid in sorted(data.qrels)[:4]:
            ranked = [line.split()[2] for line in lines if line.split()[0] == qid]
            assert ranked == [h.id for h in served.search(data.queries[qid], k=12).hits], (name, qid)


def test_ql_weights_outside_0_1_are_refused(toy_beir, tmp_path):
    from llmql.plugin.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(data=str(toy_beir), runs=("bm25",), ql_weights=(1.5,), out_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(cfg, progress=False)


def test_every_ql_run_reranks_to_the_resolved_depth(synced_embedded, ql_export, toy_beir, tmp_path):
    """Without --rerank-depth, word QL and LLM QL both re-rank BM25's list to the depth resolved for the run
    (100 with no search.json): the word-QL run is Dirichlet's order of BM25's candidates, not BM25's order."""
    from llmql.plugin.evaluate import EvalConfig, evaluate
    from llmql.train.data import load_beir

    backend, index = synced_embedded
    cfg = EvalConfig(
        data=str(toy_beir),
        url=backend.location,
        index=index,
        ql_model=str(ql_export),
        runs=("bm25", "ql", "ql-dirichlet"),
        depth=30,  # more than the toy corpus: each run file holds every candidate
        runtime="onnx",
        out_dir=str(tmp_path / "eval"),
    )
    summary = evaluate(cfg, progress=False)
    assert summary["settings"]["rerank_depth"] == 100
    data = load_beir(toy_beir, "test")
    word_ql = DirichletQL((d.id, f"{d.title} {d.text}") for d in data.corpus.values())

    def ranked(name: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in (tmp_path / "eval" / f"{name}.run").read_text().splitlines():
            out.setdefault(line.split()[0], []).append(line.split()[2])
        return out

    bm25, dirichlet, llm = ranked("bm25"), ranked("ql-dirichlet"), ranked("ql")
    for qid, candidates in bm25.items():
        scores = word_ql.score(data.queries[qid], candidates)
        assert sorted(dirichlet[qid]) == sorted(candidates), qid
        in_order = [scores[d] for d in dirichlet[qid]]  # Dirichlet's order (min-max rounding may swap near-ties)
        assert all(a >= b - 1e-9 for a, b in itertools.pairwise(in_order)), qid
        assert sorted(llm[qid]) == sorted(candidates)  # the same candidates, every one re-scored
    assert any(dirichlet[q] != bm25[q] for q in bm25), "word QL must reorder BM25's list on the toy collection"
    assert any(llm[q] != bm25[q] for q in bm25)


@pytest.mark.parametrize("max_queries", [3, None])
def test_every_figure_in_the_table_is_its_run_files_scored_directly(
    synced_embedded, ql_export, toy_beir, tmp_path, max_queries
):
    """With --max-queries the table scored the queries run over all judged ones (0.2206 where its own per-query
    mean was 0.7611). Here each printed figure is recomputed with pytrec_eval, called directly on the run file
    and the judgments of exactly the queries run, and the vs-BM25 column from its per-query values."""
    import pytrec_eval

    from llmql.plugin.evaluate import EvalConfig, evaluate, format_table
    from llmql.train.data import load_beir

    backend, index = synced_embedded
    cfg = EvalConfig(
        data=str(toy_beir),
        url=backend.location,
        index=index,
        model=str(ql_export),
        runs=("bm25", "dense", "hybrid"),
        depth=5,  # fewer than the toy corpus: some relevant documents fall out of a run
        runtime="onnx",
        max_queries=max_queries,
        out_dir=str(tmp_path / "eval"),
    )
    summary = evaluate(cfg, progress=False)
    qrels = load_beir(toy_beir, "test").qrels
    ran = sorted(qrels)[:max_queries] if max_queries else sorted(qrels)
    assert summary["queries"] == len(ran)
    assert len(ran) < len(qrels) if max_queries else len(ran) == len(qrels)
    judged = {q: qrels[q] for q in ran}
    names = {"ndcg_cut_10": "nDCG@10", "recip_rank": "MRR@10", "recall_100": "R@100"}
    table = {line.split()[0]: line.split() for line in format_table(summary).splitlines()[1:]}
    per_run = {}
    for name in cfg.runs:
        run: dict[str, dict[str, float]] = {}
        for line in (tmp_path / "eval" / f"{name}.run").read_text().splitlines():
            qid, _, doc, rank, _, _ = line.split()
            run.setdefault(qid, {})[doc] = -float(rank)  # by rank: ties in score keep the file's order
        assert set(run) == set(ran), name
        top10 = {q: {d: s for d, s in docs.items() if s >= -10} for q, docs in run.items()}
        evaluator = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"})
        mrr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
        values = {q: {**v, "recip_rank": mrr[q]["recip_rank"]} for q, v in evaluator.evaluate(run).items()}
        per_run[name] = {q: values[q]["ndcg_cut_10"] if q in values else 0.0 for q in ran}
        for column, (measure, label) in enumerate(names.items(), start=1):
            expected = sum(values.get(q, {}).get(measure, 0.0) for q in ran) / len(ran)
            assert summary["runs"][name]["metrics"][label] == pytest.approx(expected, abs=1e-9), (name, label)
            assert float(table[name][column]) == pytest.approx(expected, abs=5e-5), (name, label)
    for name in ("dense", "hybrid"):
        diff = sum(per_run[name][q] - per_run["bm25"][q] for q in ran) / len(ran)
        assert summary["runs"][name]["vs_bm25"]["ndcg@10"] == pytest.approx(diff, abs=1e-9)
        assert float(table[name][5]) == pytest.approx(diff, abs=5e-5)


def test_a_query_without_results_scores_zero_and_one_without_judgments_is_left_out():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": {"d1": 1.0}, "q2": {}, "q3": {"d1": 1.0}}  # q2 found nothing; q3 has no judgments
    scored = score_run(qrels, run, depth=100)
    assert scored["metrics"]["nDCG@10"] == pytest.approx(0.5)
    assert scored["queries"] == 2 and scored["unjudged"] == 1
    assert scored["per_query"]["q2"]["nDCG@10"] == 0.0
    only_first = score_run(qrels, run, depth=100, queries=["q1"])
    assert only_first["metrics"]["nDCG@10"] == 1.0 and set(only_first["per_query"]) == {"q1"}
