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
