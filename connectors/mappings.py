"""Index mappings, queries and score conversions for the two Lucene-based engines, as pure functions."""

from __future__ import annotations

from typing import Any

from llmql.connectors.filters import Filter, lucene_filter, parse_filter

META_KEY = "llmql"
SOURCE_EXCLUDES = ["vector", "ql_state", "search_text"]


def _common_properties() -> dict[str, Any]:
    return {
        "title": {"type": "text"},
        "text": {"type": "text"},
        "content_hash": {"type": "keyword"},
        "ql_state": {"type": "binary"},  # stored in _source, never indexed
        "fields": {"type": "object", "dynamic": True},
    }


def _common_mappings(dim: int, model: str) -> dict[str, Any]:
    """The model's identity in _meta, and string metadata under `fields.*` as exact-match keywords."""
    template = {"path_match": "fields.*", "match_mapping_type": "string", "mapping": {"type": "keyword"}}
    return {"_meta": index_meta(dim, model), "dynamic_templates": [{"fields_as_keywords": template}]}


def index_meta(dim: int, model: str) -> dict[str, Any]:
    return {META_KEY: {"format": 1, "dim": dim, "model": model}}


def opensearch_mapping(
    dim: int, model: str, m: int = 16, ef_construction: int = 128, shards: int = 1, replicas: int = 0
) -> dict[str, Any]:
    """k-NN on the Lucene engine (named explicitly: faiss is the default since 2.18 and needs native libraries),
    inner product on L2-normalised vectors (= cosine), and BM25 text fields.

    k-NN's derived source (on by default in 3.x) is turned off: with it, get/_mget and searches that read
    vectors fail with AlreadyClosedException once segments are merged after a crash recovery (seen here with
    OpenSearch 3.5 after SIGKILL; opensearch-project/k-NN#3458, #3191). Vectors then cost _source space.
    """
    index_settings = {
        "knn": True,
        "knn.derived_source.enabled": False,
        "number_of_shards": shards,
        "number_of_replicas": replicas,
    }
    return {
        "settings": {"index": index_settings},
        "mappings": {
            **_common_mappings(dim, model),
            "properties": {
                **_common_properties(),
                "vector": {
                    "type": "knn_vector",
                    "dimension": dim,
                    "method": {
                        "name": "hnsw",
                        "engine": "lucene",
                        "space_type": "innerproduct",
                        "parameters": {"m": m, "ef_construction": ef_construction},
                    },
                },
            },
        },
    }


def elasticsearch_mapping(
    dim: int,
    model: str,
    quantization: str = "none",
    m: int = 16,
    ef_construction: int = 100,
    shards: int = 1,
    replicas: int = 0,
) -> dict[str, Any]:
    """dense_vector with dot_product on L2-normalised vectors; HNSW, or int8-quantised HNSW on request (set
    explicitly: Elasticsearch 9 otherwise picks BBQ for 384+ dimensions)."""
    index_type = {"none": "hnsw", "int8": "int8_hnsw"}[quantization]
    return {
        "settings": {"index": {"number_of_shards": shards, "number_of_replicas": replicas}},
        "mappings": {
            **_common_mappings(dim, model),
            "properties": {
                **_common_properties(),
                "vector": {
                    "type": "dense_vector",
                    "dims": dim,
                    "index": True,
                    "similarity": "dot_product",
                    "index_options": {"type": index_type, "m": m, "ef_construction": ef_construction},
                },
            },
        },
    }


def filter_clauses(filter: Filter | None) -> list[dict[str, Any]]:
    """A filter (llmql.connectors.filters) as non-scoring bool clauses."""
    return lucene_filter(parse_filter(filter))


def bm25_query(query: str, filter: Filter | None = None) -> dict[str, Any]:
    """BM25 over title and text (best field plus the other's contribution), filters as non-scoring clauses."""
    match = {"multi_match": {"query": query, "fields": ["title", "text"], "type": "most_fields"}}
    clauses = filter_clauses(filter)
    return {"bool": {"must": [match], "filter": clauses}} if clauses else match


def opensearch_knn_query(vector: list[float], k: int, filter: Filter | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"vector": vector, "k": k}
    clauses = filter_clauses(filter)
    if clauses:
        body["filter"] = {"bool": {"filter": clauses}}  # Lucene engine: efficient filtering during the search
    return {"knn": {"vector": body}}


def elasticsearch_knn(
    vector: list[float], k: int, filter: Filter | None = None, num_candidates: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "field": "vector",
        "query_vector": vector,
        "k": k,
        "num_candidates": num_candidates or max(100, 2 * k),
    }
    clauses = filter_clauses(filter)
    if clauses:
        body["filter"] = clauses
    return body


def cosine_from_lucene_inner_product(score: float) -> float:
    """Lucene's maximum-inner-product score: 1 + dot for dot >= 0, else 1 / (1 - dot). Inverted here."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def cosine_from_dot_product_score(score: float) -> float:
    """Elasticsearch's dot_product similarity scores (1 + dot) / 2 on unit vectors."""
    return 2.0 * score - 1.0
