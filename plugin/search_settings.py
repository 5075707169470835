"""`search.json`: the search settings tuned for a model, kept beside its export (or model directory) so that
`llmql-search`, `llmql serve`, `llmql-eval` and `HybridSearcher` use them by default.

It records the values, the queries they were chosen on, and the figures that chose them, so a model directory
says how it is best searched and why. Without it the defaults are the untuned ones (RRF, no QL re-ranking).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from llmql.export.manifest import SEARCH_FILE
from llmql.train.core.config import write_json_atomic
from llmql.train.core.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    """How a query is searched: the first stages, their fusion, and the QL re-ranking of the fused head."""

    mode: Literal["hybrid", "bm25", "dense"] = "hybrid"
    bm25_k: int = 100  # candidates from each first stage
    knn_k: int = 100
    fusion: Literal["rrf", "minmax", "zscore"] = "rrf"
    weights: dict[str, float] = field(default_factory=lambda: {"bm25": 1.0, "dense": 1.0})
    rrf_k: int = 60
    rerank_depth: int = 0  # 0: no QL re-ranking; else re-rank the fused top-n
    ql_weight: float = 0.5  # 1.0: QL score alone; else interpolated with the (min-max) fused score
    ql_path: Literal["auto", "cached", "full"] = "auto"


MAX_K = 1000  # the most results one search returns: a request's k, and the ceiling of `llmql serve --max-k`
FORMAT = "llmql-search/1"
TUNED_FIELDS = ("mode", "fusion", "weights", "rerank_depth", "ql_weight")


def tuned_fields(config: SearchConfig) -> dict:
    """What search.json records of a setting: no QL weight when re-ranking is off (it would do nothing)."""
    return {f: getattr(config, f) for f in TUNED_FIELDS if f != "ql_weight" or config.rerank_depth}


def describe(config: SearchConfig) -> str:
    """A setting in words, for tables and logs."""
    stages = {"bm25": "BM25", "dense": "dense kNN", "hybrid": "BM25 and dense kNN"}[config.mode]
    if config.mode == "hybrid":
        weights = ", ".join(f"{k} {v:g}" for k, v in config.weights.items())
        stages += f" fused by {config.fusion} ({weights})"
    if config.rerank_depth:
        stages += f", QL re-rank of the top {config.rerank_depth} at weight {config.ql_weight:g}"
    return stages


def save_search_settings(directory: str | Path, config: SearchConfig, report: dict) -> Path:
    """Write the tuned part of `config` and the tuning report atomically."""
    path = Path(directory) / SEARCH_FILE
    payload = {"format": FORMAT, "search": tuned_fields(config), **report}
    write_json_atomic(path, payload)
    return path


def read_search_settings(directory: str | Path | None) -> dict | None:
    """The whole search.json of a model directory, or None when there is none."""
    if directory is None:
        return None
    path = Path(directory) / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON ({err.msg}); delete it or tune again") from None
    if payload.get("format") != FORMAT:
        raise DataError(f"{path}: format {payload.get('format')!r}, expected {FORMAT!r}; tune again")
    return payload


def search_config(directory: str | Path | None, **overrides) -> SearchConfig:
    """The default SearchConfig for a model: its tuned settings where it has them; `overrides` (values that are
    not None) win over both."""
    known = {f.name for f in fields(SearchConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"not SearchConfig fields: {sorted(unknown)}")
    settings = read_search_settings(directory)
    tuned = {k: v for k, v in (settings or {}).get("search", {}).items() if k in TUNED_FIELDS}
    chosen = {**tuned, **{k: v for k, v in overrides.items() if v is not None}}
    return replace(SearchConfig(), **chosen)
