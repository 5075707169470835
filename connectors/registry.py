"""Backends by name, imported lazily: a new engine is one module plus one line here."""

from __future__ import annotations

import importlib

from llmql.connectors.base import Backend, BackendError

BACKENDS = {
    "embedded": ("llmql.connectors.embedded", "EmbeddedBackend", "lancedb"),
    "memory": ("llmql.connectors.memory", "MemoryBackend", None),
    "opensearch": ("llmql.connectors.opensearch", "OpenSearchBackend", "opensearchpy"),
    "elasticsearch": ("llmql.connectors.elasticsearch", "ElasticsearchBackend", "elasticsearch"),
}


def open_backend(name: str, location: str, **options) -> Backend:
    """`location` is a directory for the embedded backend and a URL for the servers."""
    try:
        module_name, class_name, requirement = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BackendError(
            f"backend {name!r} needs the package {requirement or err.name!r}: pip install {requirement or err.name}"
        ) from None
    return getattr(module, class_name)(location, **options)
