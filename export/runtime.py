"""Serving-time encoders over ONNX Runtime: `OnnxEncoder` (embeddings) and `OnnxQLScorer` (QL re-ranking).

Needs only onnxruntime, tokenizers and numpy (no torch). Connectors and plugin encode through `load_encoder`,
which also accepts a PyTorch model directory (then torch is imported).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmql.export.manifest import read_manifest
from llmql.train.batching import length_batches, pad
from llmql.train.config import ModelConfig
from llmql.train.end_states import EndStateArrays
from llmql.train.errors import ModelError
from llmql.train.text_encoder import TextEncoderBase
from llmql.train.tokenization import PromptTokenizer

log = logging.getLogger(__name__)


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session; `threads` defaults to $LLMQL_THREADS or the core count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or int(os.environ.get("LLMQL_THREADS", "0")) or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder(TextEncoderBase):
    """Same API as `llmql.train.encoder.Encoder`, running `encoder.onnx` (or its int8 twin)."""

    def __init__(self, model_session, tokenizer: PromptTokenizer, identity: str = ""):
        self.session = model_session
        self.tokenizer = tokenizer
        self.identity = identity

    @classmethod
    def from_dir(cls, directory: str | Path, file: str | None = None, threads: int | None = None) -> OnnxEncoder:
        directory = Path(directory)
        manifest = read_manifest(directory)
        name = file or manifest["default_encoder"]
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: not in this export (have: {sorted(manifest['encoders'])})")
        return cls(session(directory / name, threads), PromptTokenizer.from_dir(directory), export_identity(manifest))

    def _embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]


class OnnxQLScorer:
    """log P(q | d) under Attention Stop: `ql_document.onnx` once per document, `ql_query.onnx` per query."""

    def __init__(self, document_session, query_session, tokenizer: PromptTokenizer, identity: str = ""):
        self.document = document_session
        self.query = query_session
        self.tokenizer = tokenizer
        self.identity = identity

    @classmethod
    def from_dir(cls, directory: str | Path, threads: int | None = None) -> OnnxQLScorer:
        directory = Path(directory)
        manifest = read_manifest(directory)
        if not manifest.get("ql_scorer"):
            raise FileNotFoundError(f"{directory}: exported without the QL scorer (re-run llmql-export --ql-scorer)")
        graphs = manifest["ql_scorer"]["files"]
        return cls(
            session(directory / graphs["document"], threads),
            session(directory / graphs["query"], threads),
            PromptTokenizer.from_dir(directory),
            export_identity(manifest),
        )

    @property
    def config(self) -> ModelConfig:
        return self.tokenizer.config

    def end_states(
        self, passages: Sequence[str], titles: Sequence[str] | None = None, batch_size: int = 16
    ) -> EndStateArrays:
        titles = titles if titles is not None else [""] * len(passages)
        rows = self.tokenizer.passages(titles, passages)
        parts, order = [], []
        for index in length_batches([len(r) for r in rows], batch_size):
            ids, mask = pad([rows[i] for i in index], self.config.pad_token_id)
            outs = self.document.run(None, {"input_ids": ids, "attention_mask": mask})
            parts.append(EndStateArrays(*outs))
            order.extend(index)
        if not parts:
            raise ValueError("no passages")
        return EndStateArrays.concat(parts).take(np.argsort(np.asarray(order)))

    def score_states(self, query: str, states: EndStateArrays, batch_size: int = 64) -> np.ndarray:
        """[N] log P(q | d) for the documents whose [E] states are given."""
        if not query.strip():
            raise ValueError("empty query")
        q = np.asarray(self.tokenizer.ql_queries([query])[0], dtype=np.int64)
        out = np.zeros(len(states), dtype=np.float64)
        for start in range(0, len(states), batch_size):
            part = states.take(slice(start, start + batch_size))
            feeds = {
                "input_ids": np.broadcast_to(q, (len(part), len(q))).copy(),
                "end_keys": part.keys.astype(np.float32),
                "end_values": part.values.astype(np.float32),
                "end_hidden": part.hidden.astype(np.float32),
                "end_position": part.positions.astype(np.int64),
            }
            out[start : start + len(part)] = self.query.run(["token_logprobs"], feeds)[0].sum(axis=1)
        return out

    def score(self, query: str, passages: Sequence[str], titles: Sequence[str] | None = None) -> np.ndarray:
        """The slow path: compute the documents' states now, then score."""
        return self.score_states(query, self.end_states(passages, titles))


def export_identity(manifest: dict) -> str:
    """The identity of the model an export was made from (recorded at export); for an export from before it was
    recorded, a digest of the export's own files, which is just as specific."""
    import hashlib

    from llmql.train.identity import PREFIX

    recorded = manifest["source"].get("identity")
    if recorded:
        return recorded
    files = json.dumps(sorted((name, entry["sha256"]) for name, entry in manifest["files"].items()))
    return PREFIX + hashlib.sha256(files.encode()).hexdigest()[:32]


def _torch_source(directory: Path, runtime: str) -> str | None:
    """The trained model an export came from, when PyTorch should run it instead of ONNX Runtime.

    runtime="auto" picks PyTorch bf16 where the CPU has native bf16 and the source directory is here, unchanged
    since the export: measured 1.7x faster than ONNX fp32 for SmolLM2-135M on such a CPU
    (bench/results/encode_speed.json), at a cosine of 0.999+ to fp32; elsewhere ONNX Runtime. "onnx" and "torch"
    force one; "torch" refuses a source retrained since the export (its vectors would not match the index).
    """
    if runtime == "onnx":
        return None
    from llmql.train.cpu import cpu_has_bf16

    manifest = read_manifest(directory)
    source = manifest["source"]["model"]
    available = Path(source).is_dir() or not source.startswith(("/", "."))
    if runtime == "torch":
        if not available:
            raise FileNotFoundError(f"{directory}: its source model {source!r} is not on this machine")
        _check_unchanged(directory, manifest, source)
        return source
    if not (available and cpu_has_bf16()):
        return None
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    try:
        _check_unchanged(directory, manifest, source)
    except ModelError as err:
        log.warning("%s; using the export's ONNX graphs", err)
        return None
    return source


def _check_unchanged(directory: Path, manifest: dict, source: str) -> None:
    from llmql.train.identity import model_identity

    recorded = manifest["source"].get("identity")
    if recorded and model_identity(source) != recorded:
        raise ModelError(f"{directory}: its source model {source} has changed since the export (retrained?)")


def load_encoder(
    path: str | Path, file: str | None = None, threads: int | None = None, runtime: str = "auto"
) -> TextEncoderBase:
    """An export directory -> OnnxEncoder (or PyTorch on its source, see `_torch_source`); a model directory or
    name -> the PyTorch Encoder. Either way `identity` names the trained model, so indexes match across runtimes."""
    from llmql.train.identity import model_identity

    path_obj = Path(path)
    if (path_obj / "manifest.json").is_file():
        source = None if file else _torch_source(path_obj, runtime)
        if source is None:
            encoder = OnnxEncoder.from_dir(path_obj, file, threads)
            encoder.directory = str(path_obj)
            return encoder
        identity, path = export_identity(read_manifest(path_obj)), source
    else:
        identity = model_identity(path)
    from llmql.train.encoder import Encoder

    encoder = Encoder.from_pretrained(path)
    encoder.identity, encoder.directory = identity, str(path_obj)
    return encoder


def load_ql_scorer(path: str | Path, threads: int | None = None, runtime: str = "auto"):
    """An export with --ql-scorer -> OnnxQLScorer (or PyTorch on its source); a model directory -> QLScorer."""
    path_obj = Path(path)
    if (path_obj / "manifest.json").is_file():
        source = _torch_source(path_obj, runtime)
        if source is None:
            return OnnxQLScorer.from_dir(path_obj, threads)
        identity, path = export_identity(read_manifest(path_obj)), source
    else:
        from llmql.train.identity import model_identity

        identity = model_identity(path)
    from llmql.train.ql_scorer import QLScorer

    scorer = QLScorer.from_pretrained(path)
    scorer.identity = identity
    return scorer
