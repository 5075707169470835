"""Parity between PyTorch and ONNX, measured at export time on real passages and edge cases."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from llmql.train.core.errors import LLMQLError


class ParityError(LLMQLError):
    """The exported graph does not reproduce the PyTorch model closely enough."""


EDGE_CASES = [
    ("", ""),  # empty passage: the prompt alone
    ("", "a"),  # one token of body
    ("", "naïve café — 日本語のテキスト, ümlaut ß, emoji 🙂"),  # non-ASCII
    ("Title only", ""),
    ("", " ".join(["long"] * 5000)),  # far beyond the token budget: truncated to the maximum length
]
EDGE_QUERIES = ["a", "What is the effect of caffeine during pregnancy?", "日本語 query ü"]


def real_passages(data_dir: str | Path | None, limit: int = 48) -> list[tuple[str, str]]:
    """Up to `limit` (title, text) pairs from a BEIR corpus, if one is given."""
    if data_dir is None:
        return []
    out = []
    with (Path(data_dir) / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            obj = json.loads(line)
            out.append((obj.get("title") or "", obj.get("text") or ""))
            if len(out) >= limit:
                break
    return out


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Worst row cosine and largest absolute difference between two [N, H] embedding matrices."""
    ref = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    cand = candidate / np.maximum(np.linalg.norm(candidate, axis=1, keepdims=True), 1e-12)
    return {
        "worst_cosine": float((ref * cand).sum(axis=1).min()),
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "rows": len(reference),
    }


def encoder_parity(
    torch_encode: Callable[[list[list[int]]], np.ndarray],
    onnx_encode: Callable[[list[list[int]], str], np.ndarray],
    rows: list[list[int]],
) -> dict[str, dict[str, float]]:
    """The ONNX graph against PyTorch on the same token rows, padded on the right and on the left."""
    reference = torch_encode(rows)
    return {side: compare(reference, onnx_encode(rows, side)) for side in ("right", "left")}


def ndcg_at_10(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    doc_ids: list[str],
    query_ids: list[str],
    qrels: dict[str, dict[str, int]],
) -> float:
    """nDCG@10 of exact dense search, computed by ir-measures."""
    import ir_measures

    scores = query_vectors @ doc_vectors.T
    run = {}
    for qi, qid in enumerate(query_ids):
        top = np.argsort(-scores[qi])[:10]
        run[qid] = {doc_ids[j]: float(scores[qi, j]) for j in top}
    return float(
        ir_measures.calc_aggregate([ir_measures.nDCG @ 10], {q: qrels[q] for q in query_ids}, run)[
            ir_measures.nDCG @ 10
        ]
    )
