"""Every figure of the host path in one run: tokenisation, encoding, sync into the memory engine with and without
[E] states, QL re-ranking of the top 20/100/1000 from cached states, and the model queue's and HTTP rates.

    .venv/bin/python -m bench.host_path --device cuda            # about 3 minutes on an H200
    .venv/bin/python -m bench.host_path --device cpu --quick     # a few minutes on 2 cores

Needs nothing beyond torch, transformers, tokenizers, peft, accelerate, bm25s, PyStemmer, gguf, FastAPI, uvicorn
and httpx: no LanceDB, no ONNX Runtime (the memory engine holds the index), so it runs where only PyTorch is.
SmolLM2-135M untrained (speed does not depend on training), SciFact (4 copies for the sync). Ratios are taken
within the run. Writes bench/results/host_path-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA, median, timed, write_results
from bench.host_path_load import batcher_rates, http_rates
from llmql.train.core.text_encoder import TextEncoderBase


@dataclass(frozen=True)
class Plan:
    tokenized: int  # documents tokenised for the tokenisation figures
    docs: int  # documents encoded for the encode figures
    batches: tuple[int, ...]
    copies: int  # of the corpus, for the sync figures
    sync_docs: int  # at most, per sync with the model
    stub_docs: int  # at most, for the sync with a model that costs nothing (enough that start-up is not the figure)
    stub_pairs: int  # alternating (tokenise, stub sync) pairs: more where the machine is shared and noisy
    depths: tuple[int, ...]
    queries: int
    seconds: float  # per load measurement
    clients: tuple[int, ...]


STUB_BATCH = 512  # documents a batch in the stub's second sync (the CPU's default of 64 is sized for a slow model)
PLANS = {
    "gpu": Plan(5183, 5183, (16, 128, 512), 4, 1_000_000, 1_000_000, 1, (20, 100, 1000), 50, 5.0, (1, 8, 32, 64)),
    "quick": Plan(600, 32, (16,), 1, 64, 3000, 3, (20, 100), 4, 4.0, (1, 8)),
}


def corpus_rows(path: Path, copies: int, limit: int) -> Path:
    """`copies` of the corpus with distinct ids, at most `limit` documents, as a JSONL file beside it."""
    out = path.with_name(f"{path.stem}-x{copies}.jsonl")
    lines = (SHARED_DATA / "scifact" / "corpus.jsonl").read_text().splitlines()
    with out.open("w") as handle:
        for n, line in enumerate(line for _ in range(copies) for line in lines):
            if n >= limit:
                break
            doc = json.loads(line)
            handle.write(json.dumps({**doc, "_id": f"{doc['_id']}-{n // len(lines)}"}) + "\n")
    return out


def tokenization(tok, titles: list[str], texts: list[str]) -> dict:
    """llmql's passages against the tokenizers library's own batch encoding of the same texts, and what a
    document ten times the passage length costs against one of that length."""
    from llmql.train.core.prompts import passage_body

    bodies = [passage_body(t, x) for t, x in zip(titles, texts, strict=True)]
    ours = median(timed(lambda: tok.passages(titles, texts), 5))
    library = median(timed(lambda: tok.tokenizer.encode_batch(bodies, add_special_tokens=False), 5))
    fitting = tok.kept_bodies(bodies)  # each about the passage length
    one = median(timed(lambda: tok.passages([""] * len(fitting), fitting), 5))
    ten = median(timed(lambda: tok.passages([""] * len(fitting), [" ".join([b] * 10) for b in fitting]), 5))
    return {
        "passages": len(texts),
        "llmql_passages_per_s": round(len(texts) / ours, 1),
        "library_texts_per_s": round(len(texts) / library, 1),
        "llmql_over_library": round(library / ours, 3),
        "ten_times_longer_cost": round(ten / one, 3),
        "cores": os.cpu_count(),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "(unset: on)"),
    }


def encoding(encoder, titles: list[str], texts: list[str], plan: Plan, tokens: int) -> dict:
    """encode_passages (tokenising included) at each batch size, and the model alone on pre-tokenised rows."""
    out = {}
    for size in plan.batches:
        seconds = median(timed(lambda s=size: encoder.encode_passages(texts, titles, s, max_padded_tokens=tokens), 2))
        out[f"encode_passages_b{size}_per_s"] = round(len(texts) / seconds, 1)
    rows = encoder.tokenizer.passages(titles, texts)
    seconds = median(timed(lambda: encoder.encode_ids(rows, max(plan.batches), max_padded_tokens=tokens), 2))
    out["model_alone_per_s"] = round(len(texts) / seconds, 1)
    return out


class StubEncoder(TextEncoderBase):
    """An encoder whose model costs nothing (a unit vector per row): what the sync's host path alone reaches."""

    def __init__(self, tokenizer, identity: str = "stub"):
        self.tokenizer, self.identity = tokenizer, identity

    def _embed(self, ids, mask) -> np.ndarray:
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out


def syncs(corpus: Path, stub_corpus: Path, encoder, scorer, stub_pairs: int) -> dict:
    """Documents/s into the memory engine: vectors, vectors and fp16 [E] states, and the host path alone."""
    out = {}
    for name, ql, cache in (("vectors", None, "none"), ("fp16_states", scorer, "fp16")):
        out[f"sync_{name}_docs_per_s"], out[f"sync_{name}_documents"] = timed_sync(corpus, name, encoder, ql, cache)
    return {**out, **stub_syncs(stub_corpus, encoder.tokenizer, stub_pairs)}


def timed_sync(corpus: Path, name: str, encoder, ql, cache: str, batch: int | None = None) -> tuple[float, int]:
    """(documents/s, documents) of one sync of `corpus` into a fresh in-memory index (`batch` documents an engine
    batch; the device's default when None)."""
    from llmql.connectors.sync import SyncConfig, sync

    cfg = SyncConfig(corpus=str(corpus), model="-", backend="memory", url=":memory:", index=f"bench-{name}")
    cfg = replace(cfg, end_states=cache, batch_size=batch)
    start = time.perf_counter()
    report = sync(cfg, progress=False, encoder=encoder, ql_scorer=ql)
    seconds = time.perf_counter() - start
    assert report.ok, report
    return round(report.indexed / seconds, 1), report.indexed


def stub_syncs(corpus: Path, tokenizer, pairs: int = 3, batch: int = STUB_BATCH) -> dict:
    """The sync with a model that costs nothing (the host path alone) against tokenising the same documents in
    one call, in alternating rounds (tokenise, sync with the device's engine batch, sync with `batch` documents a
    batch): the median of the rounds' ratios (one pair on this shared machine varied from 0.63x to 0.94x). Over a
    few thousand documents, not a few dozen: a small sync measures its start-up."""
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    titles, texts = [d.get("title", "") for d in docs], [d["text"] for d in docs]
    stub, tokenised, rates = StubEncoder(tokenizer), [], {"": [], f"_batch{batch}": []}
    for n in range(pairs):
        tokenised.append(len(docs) / timed(lambda: tokenizer.passages(titles, texts), 1, warmup=0)[0])
        rates[""].append(timed_sync(corpus, f"stub_model-{n}", stub, None, "none")[0])
        rates[f"_batch{batch}"].append(timed_sync(corpus, f"stub_model-b-{n}", stub, None, "none", batch)[0])
    out = {"sync_stub_model_documents": len(docs), "tokenization_same_documents_per_s": round(median(tokenised), 1)}
    for label, syncs in rates.items():
        ratios = [round(s / t, 3) for s, t in zip(syncs, tokenised, strict=True)]
        out[f"sync_stub_model{label}_docs_per_s"] = round(median(syncs), 1)
        out[f"stub{label}_over_tokenization"] = median(ratios)
        out[f"stub{label}_over_tokenization_rounds"] = ratios
    return out


def ql_rerank(scorer, index: str, queries: list[str], depths: tuple[int, ...]) -> dict:
    """Cached-[E] re-ranking p50 (fetch, unpack, score) per depth, and the scoring alone on unpacked states."""
    from llmql.connectors.registry import open_backend
    from llmql.connectors.state_blobs import unpack
    from llmql.plugin.rerank import QLReranker

    backend = open_backend("memory", ":memory:")
    ids = [i for i, _ in backend.content_hashes(index)]
    reranker = QLReranker(scorer, backend, index, "cached")
    out = {}
    for depth in depths:
        whole, model = [], []
        for n, query in enumerate(queries):
            found = [h.id for h in backend.bm25(index, query, depth)]
            top = list(dict.fromkeys(found + ids))[:depth]
            states = unpack([r.end_states for r in backend.fetch(index, top, with_state=True).values()])
            elapsed = reranker.rerank(query, top).seconds
            start = time.perf_counter()
            scorer.score_states(query, states)
            if n:  # the first query of each depth warms up
                whole.append(elapsed * 1000)
                model.append((time.perf_counter() - start) * 1000)
        out[f"ql_top{depth}_p50_ms"] = round(float(np.median(whole)), 2)
        out[f"ql_top{depth}_scoring_alone_p50_ms"] = round(float(np.median(model)), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--quick", action="store_true", help="small slices: the development machine's version")
    parser.add_argument("--out", default=None, help="also copy the JSON here (a lent machine's $OUT)")
    args = parser.parse_args()

    from llmql.export.runtime import load_encoder, load_ql_scorer
    from llmql.train.core.device import batch_sizes, resolve_device
    from llmql.train.data import load_beir

    device = resolve_device(args.device)
    plan = PLANS["quick" if args.quick else "gpu"]
    began = time.perf_counter()
    encoder = load_encoder(args.model, device=device)
    scorer = load_ql_scorer(args.model, device=device)
    data = load_beir(SHARED_DATA / "scifact", "test")
    docs = list(data.corpus.values())
    titles, texts = [d.title for d in docs], [d.text for d in docs]
    results: dict = {"device": device, "plan": plan.__dict__}

    def step(name: str, fn) -> None:
        """One measurement, then every figure so far written out (a run stopped later keeps them)."""
        start = time.perf_counter()
        results[name] = fn()
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        results["total_seconds"] = round(time.perf_counter() - began, 1)
        print(name, json.dumps(results[name]), flush=True)
        path = write_results(f"host_path-{'cuda' if device.startswith('cuda') else 'cpu'}", results)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / path.name).write_text(path.read_text())

    tokens = batch_sizes(device, encoder.dim).padded_tokens
    n = plan.docs
    m = plan.tokenized
    step("tokenization", lambda: tokenization(encoder.tokenizer, titles[:m], texts[:m]))
    step("encode", lambda: encoding(encoder, titles[:n], texts[:n], plan, tokens))
    work = Path(tempfile.mkdtemp(prefix="llmql-host-path-"))
    corpus = corpus_rows(work / "corpus.jsonl", plan.copies, plan.sync_docs)
    stub_corpus = corpus_rows(work / "stub-corpus.jsonl", plan.copies, plan.stub_docs)
    step("sync", lambda: syncs(corpus, stub_corpus, encoder, scorer, plan.stub_pairs))
    queries = [data.queries[q] for q in sorted(data.qrels)[: plan.queries]]
    step("ql_rerank", lambda: ql_rerank(scorer, "bench-fp16_states", queries, plan.depths))
    step("batcher", lambda: batcher_rates(encoder, queries, plan.clients, plan.seconds))
    step("http", lambda: http_rates(args.model, device, work, corpus, plan.clients, plan.seconds))


if __name__ == "__main__":
    main()
