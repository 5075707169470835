"""Typed configuration: how a model directory is used (`ModelConfig`) and how each stage was trained.

Everything here is torch-free and serialises to `llmql.json`, written beside every checkpoint and export so
that a directory says how to use itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from llmql.train.core.prompts import PASSAGE_TEMPLATE, QUERY_TEMPLATE

CONFIG_NAME = "llmql.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PromptConfig:
    """Instruction templates; `{body}` is the passage (`title text`) or the query."""

    passage: str = PASSAGE_TEMPLATE
    query: str = QUERY_TEMPLATE


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to turn text into model inputs and model outputs into scores.

    Token ids are stored (not just names) so the ONNX runtime can work from `tokenizer.json` alone.
    """

    base_model: str
    end_token_id: int  # [E]: the tokenizer's EOS; it ends the passage prompt and the query prompt
    pad_token_id: int
    bos_token_id: int | None = None  # prepended when the tokenizer adds one by default
    mask_token_id: int | None = None  # id used by token-level Input Corruption
    embedding_dim: int = 0
    prompts: PromptConfig = field(default_factory=PromptConfig)
    max_passage_tokens: int = 200
    max_query_tokens: int = 200
    pooling: Literal["last"] = "last"
    normalize: bool = True
    adapter: str | None = None  # sub-folder holding the contrastive LoRA adapter (retriever = adapter on)


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation settings shared by both stages."""

    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None  # overrides warmup_ratio when set
    batch_size: int = 8  # examples (stage 1) or queries (stage 2) per process per micro-batch
    grad_accum: int = 1
    max_steps: int | None = None
    epochs: float = 1.0
    seed: int = 42
    bf16: bool | None = None  # None: autocast only where the CPU (or GPU) has native bf16; True/False force it
    gradient_checkpointing: bool = False
    save_every: int = 50  # steps between resumable checkpoints
    max_grad_norm: float = 1.0
    num_workers: int | None = None  # DataLoader workers; None: 4 on a GPU, 0 on a CPU
    attention: Literal["auto", "dense", "flex", "two-pass"] = "auto"  # llmql.train.attention; auto: per device
    pack: bool | None = None  # several examples a row; None: with the flex route
    compile: bool = False  # torch.compile the decoder


@dataclass(frozen=True)
class LoraSettings:
    r: int = 32
    alpha: int = 64
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class QLTrainConfig:
    """Stage 1: query-likelihood learning with Attention Stop and Input Corruption."""

    model: str
    data: str
    out: str
    split: str = "train"
    train_file: str | None = None  # Tevatron-style JSONL instead of (or besides) BEIR qrels
    exclude_queries: str | None = None  # file of query ids held out (validation)
    pseudo_queries: Literal["none", "titles"] = "none"  # titles: each title as a query for its own text
    prompts: PromptConfig | None = None  # None: the source model's prompts, else the paper's
    max_passage_tokens: int = 200
    max_query_tokens: int = 200
    mask_prob: float = 0.6
    corruption: Literal["word", "token"] = "word"
    attention_stop: bool = True
    loss_on: Literal["query", "all"] = "query"
    lora: LoraSettings | None = None  # None: full fine-tune, as in the paper
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass(frozen=True)
class ContrastiveTrainConfig:
    """Stage 2: InfoNCE bi-encoder with last-token pooling, LoRA on the stage-1 weights."""

    model: str
    data: str
    out: str
    split: str = "train"
    negatives: str | None = None  # Tevatron-style JSONL; mined with BM25 when absent
    exclude_queries: str | None = None
    group_size: int = 16  # 1 positive + (group_size - 1) negatives per query
    temperature: float = 0.01
    prompts: PromptConfig | None = None  # None: the source model's prompts, else the paper's
    max_passage_tokens: int = 200
    max_query_tokens: int = 200
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    merge: bool = False
    grad_cache_chunk: int | None = None  # sequences a forward with GradCache; None: only when a step would not fit
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=1e-4, warmup_steps=100))


T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Dataclass -> JSON-ready dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Inverse of `to_dict`; unknown keys are an error so typos in hand-edited files surface."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown field(s) for {cls.__name__}: {sorted(unknown)}")
    return cls(**{k: _convert(hints[k], v) for k, v in data.items()})  # type: ignore[call-arg]


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is not type(None):
                return _convert(arg, value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if origin is tuple:
        return tuple(value)
    return value


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file of this process's own and a rename, so readers never see half a file
    and two writers never share a temporary one (the last rename wins, whole)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_llmql_config(directory: Path, model: ModelConfig, training: Any = None, history: list | None = None) -> None:
    """Write `llmql.json`: the model section plus how it was trained (stage configs, earliest first)."""
    stages = list(history or [])
    if training is not None:
        stages.append({"stage": type(training).__name__, **to_dict(training)})
    payload = {"format_version": FORMAT_VERSION, "model": to_dict(model), "training": stages}
    write_json_atomic(Path(directory) / CONFIG_NAME, payload)


def load_llmql_config(directory: Path) -> tuple[ModelConfig, list[dict[str, Any]]]:
    """Read `llmql.json` from a model or export directory."""
    path = Path(directory) / CONFIG_NAME
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no llmql config; is this a directory written by llmql?") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {payload.get('format_version')!r}, expected {FORMAT_VERSION}")
    return from_dict(ModelConfig, payload["model"]), list(payload.get("training", []))
