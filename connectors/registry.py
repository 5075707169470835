"""Backends by name, imported lazily: a new engine is one module plus one line here."""

from __future__ import annotations

import importlib
from pathlib import Path

from llmql.connectors.base import Backend, BackendError, UnknownIndex

BACKENDS = {
    "embedded": ("llmql.connectors.embedded", "EmbeddedBackend", "lancedb"),
    "memory": ("llmql.connectors.memory", "MemoryBackend", None),
    "opensearch": ("llmql.connectors.opensearch", "OpenSearchBackend", "opensearchpy"),
    "elasticsearch": ("llmql.connectors.elasticsearch", "ElasticsearchBackend", "elasticsearch"),
}


DIRECTORY_ENGINES = ("embedded", "memory")  # engines whose location is a directory they create on first use


def _check_directory(name: str, location: str, create: bool) -> None:
    """A directory engine's location: a directory (or, to create one, nothing yet), and ':memory:' only for the
    memory engine (the embedded one would make a folder of that name)."""
    if location == ":memory:":
        if name != "memory":
            raise BackendError(f"{name}: ':memory:' is the memory engine's in-process location; give a directory")
        return
    path = Path(location)
    if path.exists() and not path.is_dir():
        raise BackendError(
            f"{location}: is a file, not a directory; the {name} engine keeps its indexes in a directory"
        )
    if not create and not path.is_dir():
        raise UnknownIndex(f"{location}: no such directory, so no index: nothing was synced there")


def open_backend(name: str, location: str, create: bool = True, **options) -> Backend:
    """`location` is a directory for the embedded and memory backends and a URL for the servers. `create=False`
    (searching, evaluating, serving) refuses a directory that is not there instead of creating an empty one."""
    if name in DIRECTORY_ENGINES:
        _check_directory(name, location, create)
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
