"""A model's identity is a digest of what decides its outputs (weights, adapter, configs, tokenizer), not its path.

An index records the identity of the model its vectors and [E] states came from, and a document's content hash
includes it: retraining into the same folder yields a new identity, so `--incremental` re-encodes everything and
search refuses the stale index, instead of mixing vectors of two models.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from llmql.train.core.model_sources import resolve_model

PREFIX = "sha256:"
# Files that decide the outputs: weights, configs (llmql.json holds prompts and pooling), tokenizer.
_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".gguf")
_SKIPPED_DIRS = {"checkpoints", "merged"}  # resumable training state; a merged copy of the same weights
_SKIPPED_FILES = {"search.json"}  # tuned search settings: how to search with the model, not the model


def identity_files(directory: Path) -> list[Path]:
    """The files whose bytes make up a model directory's identity, in a fixed order (adapter folder included)."""
    directory = Path(directory)
    files = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if relative.parts[0] in _SKIPPED_DIRS or len(relative.parts) > 2 or not path.is_file():
            continue
        if path.suffix in _SUFFIXES and path.name not in _SKIPPED_FILES:
            files.append(path)
    return files


def directory_identity(directory: Path) -> str:
    """sha256 over (relative name, bytes) of `identity_files`; cached per file size and modification time."""
    directory = Path(directory).resolve()
    digest = hashlib.sha256()
    for path in identity_files(directory):
        stat = path.stat()
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(_file_digest(str(path), stat.st_size, stat.st_mtime_ns).encode())
    return PREFIX + digest.hexdigest()[:32]


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(spec: str | Path) -> str:
    """The identity of a model directory, GGUF file or named model (resolved to its directory first)."""

    path = Path(spec).expanduser()
    if path.is_file():
        stat = path.stat()
        return PREFIX + _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)[:32]
    return directory_identity(resolve_model(spec))
