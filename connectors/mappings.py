"""Index mappings, queries and score conversions for the two Lucene-based engines, as pure functions."""

from __future__ import annotations

from typing import Any

from llmql.connectors.filters import Filter, lucene_filter, parse_filter

META_KEY = "llmql"
SOURCE_EXCLUDES = ["vector", "ql_state", "search_text", "passages"]
PASSAGES = "passages"  # a chunked index's nested passages: vector, start, end, ql_state (its end states)


def _common_properties() -> dict[str, Any]:
    return {
        "title": {"type": "text"},
        "text": {"type": "text"},
        "content_hash": {"type": "keyword"},
        "ql_state": {"type": "binary"},  # stored in _source, never indexed
        "fields": {"type": "object", "dynamic": True},
    }


def _mappings(dim: int, model: str, vector: dict[str, Any], chunking: str | None) -> dict[str, Any]:
    """The model's identity in _meta, string metadata under `fields.*` as exact-match keywords, BM25 text, and
    the vector: top-level, or in each nested passage of a chunked index (the engine then scores a document by
    its nearest passage, and replaces or deletes its passages with it)."""
    template = {"path_match": "fields.*", "match_mapping_type": "string", "mapping": {"type": "keyword"}}
    if chunking:
        passage = {"vector": vector, "start": {"type": "integer"}, "end": {"type": "integer"}}
        layout = {PASSAGES: {"type": "nested", "properties": {**passage, "ql_state": {"type": "binary"}}}}
    else:
        layout = {"vector": vector}
    return {
        "_meta": index_meta(dim, model, chunking),
        "dynamic_templates": [{"fields_as_keywords": template}],
        "properties": {**_common_properties(), **layout},
    }


def index_meta(dim: int, model: str, chunking: str | None = None) -> dict[str, Any]:
    return {META_KEY: {"format": 1, "dim": dim, "model": model, **({"chunking": chunking} if chunking else {})}}


Replicas = int | str  # a count, or "auto": none on one node, one as soon as there is a second node to hold it


def shard_settings(shards: int = 1, replicas: Replicas = "auto") -> dict[str, Any]:
    """Shards and replicas: `auto` is `auto_expand_replicas: 0-1`, so the same index is green on a single node and
    keeps a copy of every shard on another node of a cluster (a node can fail without losing a document)."""
    if replicas == "auto":
        return {"number_of_shards": shards, "auto_expand_replicas": "0-1"}
    return {"number_of_shards": shards, "number_of_replicas": int(replicas)}


def opensearch_mapping(
    dim: int,
    model: str,
    m: int = 16,
    ef_construction: int = 128,
    shards: int = 1,
    replicas: Replicas = "auto",
    chunking: str | None = None,
) -> dict[str, Any]:
    """k-NN on the Lucene engine (named explicitly: faiss is the default since 2.18 and needs native libraries),
    inner product on L2-normalised vectors (= cosine), and BM25 text fields.

    k-NN's derived source (on by default in 3.x) is turned off: with it, get/_mget and searches that read
    vectors fail with AlreadyClosedException once segments are merged after a crash recovery (seen here with
    OpenSearch 3.5 after SIGKILL; opensearch-project/k-NN#3458, #3191). Vectors then cost _source space.
    """
    index_settings = {"knn": True, "knn.derived_source.enabled": False, **shard_settings(shards, replicas)}
    vector = {
        "type": "knn_vector",
        "dimension": dim,
        "method": {
            "name": "hnsw",
            "engine": "lucene",
            "space_type": "innerproduct",
            "parameters": {"m": m, "ef_construction": ef_construction},
        },
    }
    return {"settings": {"index": index_settings}, "mappings": _mappings(dim, model, vector, chunking)}


def elasticsearch_mapping(
    dim: int,
    model: str,
    quantization: str = "none",
    m: int = 16,
    ef_construction: int = 100,
    shards: int = 1,
    replicas: Replicas = "auto",
    chunking: str | None = None,
) -> dict[str, Any]:
    """dense_vector with dot_product on L2-normalised vectors; HNSW, or int8-quantised HNSW on request (set
    explicitly: Elasticsearch 9 otherwise picks BBQ for 384+ dimensions)."""
    index_type = {"none": "hnsw", "int8": "int8_hnsw"}[quantization]
    vector = {
        "type": "dense_vector",
        "dims": dim,
        "index": True,
        "similarity": "dot_product",
        "index_options": {"type": index_type, "m": m, "ef_construction": ef_construction},
    }
    return {
        "settings": {"index": shard_settings(shards, replicas)},
        "mappings": _mappings(dim, model, vector, chunking),
    }


def filter_clauses(filter: Filter | None) -> list[dict[str, Any]]:
    """A filter (llmql.connectors.filters) as non-scoring bool clauses."""
    return lucene_filter(parse_filter(filter))


def bm25_query(query: str, filter: Filter | None = None) -> dict[str, Any]:
    """BM25 over title and text (best field plus the other's contribution), filters as non-scoring clauses."""
    match = {"multi_match": {"query": query, "fields": ["title", "text"], "type": "most_fields"}}
    clauses = filter_clauses(filter)
    return {"bool": {"must": [match], "filter": clauses}} if clauses else match


# which passage matched: its span, from the nested hit's doc values (never the vectors or states)
PASSAGE_INNER_HITS = {"size": 1, "_source": False, "fields": [f"{PASSAGES}.start", f"{PASSAGES}.end"]}


def opensearch_knn_query(
    vector: list[float], k: int, filter: Filter | None = None, chunked: bool = False
) -> dict[str, Any]:
    """Chunked: a nested kNN over the passages, a document scoring as its nearest one (the filter acts on the
    document's fields before the search, as the k-NN plugin documents for parent fields)."""
    body: dict[str, Any] = {"vector": vector, "k": k}
    clauses = filter_clauses(filter)
    if clauses:
        body["filter"] = {"bool": {"filter": clauses}}  # Lucene engine: efficient filtering during the search
    if not chunked:
        return {"knn": {"vector": body}}
    knn = {"knn": {f"{PASSAGES}.vector": body}}
    return {"nested": {"path": PASSAGES, "query": knn, "score_mode": "max", "inner_hits": PASSAGE_INNER_HITS}}


def elasticsearch_knn(
    vector: list[float],
    k: int,
    filter: Filter | None = None,
    num_candidates: int | None = None,
    chunked: bool = False,
) -> dict[str, Any]:
    """Chunked: kNN over the nested passages, which Elasticsearch diversifies to the k nearest documents."""
    body: dict[str, Any] = {
        "field": f"{PASSAGES}.vector" if chunked else "vector",
        "query_vector": vector,
        "k": k,
        "num_candidates": num_candidates or max(100, 2 * k),
    }
    clauses = filter_clauses(filter)
    if clauses:
        body["filter"] = clauses
    if chunked:
        body["inner_hits"] = PASSAGE_INNER_HITS
    return body


def passage_span(hit: dict[str, Any]) -> tuple[int, int] | None:
    """The best passage's (start, end) from a chunked kNN hit's inner hits, if any. OpenSearch returns the doc
    values under their full paths (`passages.start: [3]`), Elasticsearch grouped under the nested path
    (`passages: [{start: [3], end: [17]}]`)."""
    inner = hit.get("inner_hits", {}).get(PASSAGES, {}).get("hits", {}).get("hits", [])
    if not inner:
        return None
    fields = inner[0].get("fields", {})
    grouped = (fields.get(PASSAGES) or [{}])[0]
    start = fields.get(f"{PASSAGES}.start") or grouped.get("start")
    end = fields.get(f"{PASSAGES}.end") or grouped.get("end")
    return (int(start[0]), int(end[0])) if start and end else None


def cosine_from_lucene_inner_product(score: float) -> float:
    """Lucene's maximum-inner-product score: 1 + dot for dot >= 0, else 1 / (1 - dot). Inverted here."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def cosine_from_dot_product_score(score: float) -> float:
    """Elasticsearch's dot_product similarity scores (1 + dot) / 2 on unit vectors."""
    return 2.0 * score - 1.0
