"""Query latency per stage (BM25, encode, kNN, fusion, QL re-rank by the fast and the full path) on the embedded
engine and the real servers, and the storage cost of the QL cache per document.

    eval "$(scripts/search-server env)"
    .venv/bin/python -m bench.latency [--docs 1000] [--queries 100] [--model smollm2-135m]

The same records (vectors and fp16 [E] states, computed once) are written to every engine, so engines are
compared on equal data. Latency does not depend on training, so the untrained model is fine here.
Writes bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA, engine_targets, write_results


def percentiles(values: list[float]) -> dict:
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--full-path-queries", type=int, default=10, help="the full QL path is slow; fewer queries")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args()

    from llmql.connectors.registry import open_backend
    from llmql.export.runtime import load_encoder, load_ql_scorer
    from llmql.train.data import load_beir

    data = load_beir(SHARED_DATA / "scifact", "test")
    qids = sorted(data.qrels)[: args.queries]
    keep = {d for q in qids for d in data.qrels[q]}
    ids = list(dict.fromkeys([*sorted(keep), *list(data.corpus)]))[: args.docs]
    work = Path(tempfile.mkdtemp(prefix="llmql-latency-"))
    encoder = load_encoder(args.model, runtime=args.runtime, device=args.device)
    scorer = load_ql_scorer(args.model, runtime=args.runtime, device=args.device)
    identity = getattr(encoder, "identity", "") or args.model
    records = encoded_records(data, ids, work / "corpus.jsonl", encoder, scorer, identity)

    results = {
        "storage_bytes_per_document": {
            "ql_state_fp16": len(records[0].end_states),
            "vector_float32": int(records[0].vector.shape[0] * 4),
        },
        "engines": {},
    }
    queries = [data.queries[q] for q in qids]
    for engine, location in engine_targets(work / "lancedb"):
        backend = open_backend(engine, location)
        row = measure_engine(backend, records, encoder, scorer, identity, queries, args.full_path_queries)
        results["engines"][engine] = row
        print(engine, json.dumps(row), flush=True)
    write_results("latency", {"settings": vars(args), "documents": len(records), "queries": len(qids), **results})


def encoded_records(data, ids: list[str], corpus: Path, encoder, scorer, identity: str) -> list:
    """The documents `ids` as records with their vectors and fp16 [E] states, encoded once for every engine."""
    from llmql.connectors.base import Record
    from llmql.connectors.corpus import content_hash, read_corpus
    from llmql.connectors.state_blobs import pack

    corpus.write_text(
        "".join(json.dumps({"_id": i, "title": data.corpus[i].title, "text": data.corpus[i].text}) + "\n" for i in ids)
    )
    docs = list(read_corpus(corpus))
    print(f"encoding {len(docs)} documents and their [E] states once", flush=True)
    vectors = encoder.encode_passages([d.text for d in docs], [d.title for d in docs], progress=True)
    states = pack(scorer.end_states([d.text for d in docs], [d.title for d in docs]), "fp16")
    return [Record(d.id, d.title, d.text, vectors[i], content_hash(d, identity), states[i]) for i, d in enumerate(docs)]


def measure_engine(
    backend, records: list, encoder, scorer, identity: str, queries: list[str], full_path_queries: int
) -> dict:
    """Per-stage p50/p95 of the hybrid search, then of the QL re-rank of BM25's top 20/50/100 by the cached and
    the full path; the first query of each series is a warm-up and left out."""
    from llmql.plugin.rerank import QLReranker
    from llmql.plugin.search import HybridSearcher, SearchConfig

    index = "llmql-latency"
    backend.drop_index(index)
    backend.open_index(index, encoder.dim, identity)
    for i in range(0, len(records), 128):
        assert not backend.upsert(index, records[i : i + 128]).failed
    backend.refresh(index)
    stages: dict[str, list[float]] = {}
    searcher = HybridSearcher(backend, index, encoder, scorer, SearchConfig(bm25_k=100, knn_k=100))
    for query in queries:
        for stage, ms in searcher.search(query, k=10).timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    row = {stage: percentiles(v[1:]) for stage, v in stages.items()}
    cached, full = (QLReranker(scorer, backend, index, path) for path in ("cached", "full"))
    for depth in (20, 50, 100):
        fast, slow = [], []
        for n, query in enumerate(queries):
            top = [h.id for h in backend.bm25(index, query, depth)]
            fast.append(cached.rerank(query, top).seconds * 1e3)
            if n < full_path_queries:
                slow.append(full.rerank(query, top).seconds * 1e3)
        row[f"ql_rerank_top{depth}_cached"] = percentiles(fast[1:])
        row[f"ql_rerank_top{depth}_full"] = percentiles(slow[1:])
    backend.drop_index(index)
    return row


if __name__ == "__main__":
    main()
