"""Serving-time encoders over ONNX Runtime: `OnnxEncoder` (embeddings) and `OnnxQLScorer` (QL re-ranking).

Needs only onnxruntime, tokenizers and numpy (no torch). Connectors and plugin encode through `load_encoder`,
which also accepts a PyTorch model directory (then torch is imported).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from llmql.export.manifest import read_manifest
from llmql.train.core.cpu import cpu_has_bf16, cpu_threads
from llmql.train.core.device import DeviceError, resolve_device
from llmql.train.core.end_states import EndStates
from llmql.train.core.errors import ModelError
from llmql.train.core.identity import PREFIX, model_identity
from llmql.train.core.ql_base import QLScorerBase
from llmql.train.core.text_encoder import TextEncoderBase
from llmql.train.core.tokenization import PromptTokenizer

log = logging.getLogger(__name__)


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session; `threads` defaults to this process's share of the cores (`cpu_threads`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder(TextEncoderBase):
    """Same API as `llmql.train.encoder.Encoder`, running `encoder.onnx` (or its int8 twin)."""

    def __init__(self, model_session, tokenizer: PromptTokenizer, identity: str = "", directory: str | None = None):
        self.session = model_session
        self.tokenizer = tokenizer
        self.identity = identity
        self.directory = directory

    @classmethod
    def from_dir(cls, directory: str | Path, file: str | None = None, threads: int | None = None) -> OnnxEncoder:
        directory = Path(directory)
        manifest = read_manifest(directory)
        name = file or manifest["default_encoder"]
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: not in this export (have: {sorted(manifest['encoders'])})")
        model = session(directory / name, threads)
        return cls(model, PromptTokenizer.from_dir(directory), export_identity(manifest), str(directory))

    def _embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]


class OnnxQLScorer(QLScorerBase):
    """log P(q | d) under Attention Stop: `ql_document.onnx` once per document, `ql_query.onnx` per query."""

    def __init__(
        self,
        document_session,
        query_session,
        tokenizer: PromptTokenizer,
        identity: str = "",
        vocab_size: int | None = None,
    ):
        self.document = document_session
        self.query = query_session
        self.tokenizer = tokenizer
        self.identity = identity
        self._vocab_size = vocab_size  # the LM head's width (the manifest's; exports before it: the tokenizer's)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size or super().vocab_size

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
            manifest["ql_scorer"].get("vocab_size"),
        )

    def _document_states(self, ids: np.ndarray, mask: np.ndarray) -> EndStates:
        return EndStates(*self.document.run(None, {"input_ids": ids, "attention_mask": mask}))

    def _query_logprobs(self, query: np.ndarray, states: EndStates) -> np.ndarray:
        feeds = {
            "input_ids": query,
            "end_keys": states.keys.astype(np.float32),
            "end_values": states.values.astype(np.float32),
            "end_hidden": states.hidden.astype(np.float32),
            "end_position": states.positions.astype(np.int64),
        }
        return self.query.run(["token_logprobs"], feeds)[0]


def export_identity(manifest: dict) -> str:
    """The identity of the model an export was made from (recorded at export); for an export from before it was
    recorded, a digest of the export's own files, which is just as specific."""
    import hashlib

    recorded = manifest["source"].get("identity")
    if recorded:
        return recorded
    files = json.dumps(sorted((name, entry["sha256"]) for name, entry in manifest["files"].items()))
    return PREFIX + hashlib.sha256(files.encode()).hexdigest()[:32]


def _torch_source(directory: Path, runtime: str, device: str = "cpu") -> str | None:
    """The trained model an export came from, when PyTorch should run it instead of ONNX Runtime.

    runtime="auto" picks PyTorch bf16 where the CPU has native bf16 and the source directory is here, unchanged
    since the export: measured 1.7x faster than ONNX fp32 for SmolLM2-135M on such a CPU
    (bench/results/encode_speed.json), at a cosine of 0.999+ to fp32; elsewhere ONNX Runtime. "onnx" and "torch"
    force one; "torch" refuses a source retrained since the export (its vectors would not match the index). On a
    GPU the export always runs as PyTorch on its source: ONNX stays the portable artefact.
    """
    if device != "cpu":
        if runtime == "onnx":
            raise DeviceError(f"{directory}: --runtime onnx runs on the CPU; use --runtime auto or torch on {device}")
        runtime = "torch"
    if runtime == "onnx":
        return None

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

    recorded = manifest["source"].get("identity")
    if recorded and model_identity(source) != recorded:
        raise ModelError(f"{directory}: its source model {source} has changed since the export (retrained?)")


def load_encoder(
    path: str | Path, file: str | None = None, threads: int | None = None, runtime: str = "auto", device: str = "cpu"
) -> TextEncoderBase:
    """An export directory -> OnnxEncoder (or PyTorch on its source, see `_torch_source`); a model directory or
    name -> the PyTorch Encoder. `device`: auto, cpu, cuda or cuda:N (`llmql.train.core.device.resolve_device`).
    Either way `identity` names the trained model, so indexes match across runtimes and devices."""

    device = resolve_device(device)
    path_obj = Path(path)
    if (path_obj / "manifest.json").is_file():
        source = None if file else _torch_source(path_obj, runtime, device)
        if source is None:
            return OnnxEncoder.from_dir(path_obj, file, threads)
        identity, path = export_identity(read_manifest(path_obj)), source
    else:
        identity = model_identity(path)
    from llmql.train.encoder import Encoder  # torch, only when this runs: the ONNX path stays torch-free

    return Encoder.from_pretrained(path, device=device, identity=identity, directory=str(path_obj))


def load_ql_scorer(path: str | Path, threads: int | None = None, runtime: str = "auto", device: str = "cpu"):
    """An export with --ql-scorer -> OnnxQLScorer (or PyTorch on its source); a model directory -> QLScorer.
    `device` as for `load_encoder`."""
    device = resolve_device(device)
    path_obj = Path(path)
    if (path_obj / "manifest.json").is_file():
        source = _torch_source(path_obj, runtime, device)
        if source is None:
            return OnnxQLScorer.from_dir(path_obj, threads)
        identity, path = export_identity(read_manifest(path_obj)), source
    else:
        from llmql.train.core.identity import model_identity

        identity = model_identity(path)
    from llmql.train.ql_scorer import QLScorer  # torch, only when this runs: the ONNX path stays torch-free

    return QLScorer.from_pretrained(path, device=device, identity=identity)
