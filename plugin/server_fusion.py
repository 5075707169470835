"""For OpenSearch users who want the server to fuse: the equivalent neural-search `hybrid` query and the
normalization search pipeline, for a given query text and query vector. llmql's default stays client-side
fusion, which needs no plugin and works on every engine and licence."""

from __future__ import annotations

from typing import Any


def normalization_pipeline(
    technique: str = "min_max", combination: str = "arithmetic_mean", weights: tuple[float, float] = (0.5, 0.5)
) -> dict[str, Any]:
    """Body for `PUT /_search/pipeline/<name>` (needs the neural-search plugin, OpenSearch 2.10+)."""
    return {
        "description": "llmql: BM25 + LLM-QL dense, normalised and combined server-side",
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": technique},
                    "combination": {"technique": combination, "parameters": {"weights": list(weights)}},
                }
            }
        ],
    }


def hybrid_query(text: str, vector: list[float], k: int = 100, size: int = 10) -> dict[str, Any]:
    """Body for `POST /<index>/_search?search_pipeline=<name>`: BM25 over title and text, kNN on the vector."""
    return {
        "size": size,
        "_source": {"excludes": ["vector", "ql_state"]},
        "query": {
            "hybrid": {
                "queries": [
                    {"multi_match": {"query": text, "fields": ["title", "text"], "type": "most_fields"}},
                    {"knn": {"vector": {"vector": vector, "k": k}}},
                ]
            }
        },
    }
