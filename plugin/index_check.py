"""Refuse, at start-up, models an index was not built with: vectors of one model searched with another's query
embeddings give meaningless rankings with no error, and [E] states of one model scored by another likewise."""

from __future__ import annotations

import logging

from llmql.connectors.base import IndexMismatch, SearchBackend, check_index_model
from llmql.train.core.ql_base import QueryLikelihoodScorer
from llmql.train.core.text_encoder import TextEncoder

log = logging.getLogger(__name__)


def check_models(
    backend: SearchBackend,
    index: str,
    encoder: TextEncoder | None = None,
    ql_scorer: QueryLikelihoodScorer | None = None,
    ql_path: str = "auto",
) -> str:
    """Raise IndexMismatch (naming both models) when `encoder` did not make the index's vectors; return the QL
    path to use: cached [E] states only when `ql_scorer` is the model that made them ('auto' falls back to
    re-reading the documents, 'cached' is refused)."""
    if encoder is None and ql_scorer is None:
        return ql_path
    info = backend.index_info(index)
    if encoder is not None:
        remedy = "query with the model the index was synced with, or sync the index again with this one"
        check_index_model(backend.location, info, encoder.dim, encoder.identity, remedy)
    if ql_scorer is None or ql_path == "full" or ql_scorer.identity == info.model:
        return ql_path
    message = (
        f"{backend.location} index {info.name!r}: its cached [E] states come from model {info.model!r}, "
        f"not the QL model {ql_scorer.identity!r}"
    )
    if ql_path == "cached":
        raise IndexMismatch(message + "; use the QL scorer of the synced model, or the full path")
    log.warning("%s; QL re-ranking re-reads the documents instead", message)
    return "full"
