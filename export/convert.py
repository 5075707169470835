"""`export_model`: a trained retriever (or any causal LM) -> a self-describing ONNX export directory.

Everything is written into a temporary sibling folder and renamed into place only once the parity checks have
passed, so a crash, a failed check or a full disk never leaves a directory that looks like a finished export.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from llmql.export.graphs import EmbeddingGraph, QLDocumentGraph, QLQueryGraph
from llmql.export.manifest import MANIFEST, SEARCH_FILE, onnx_versions, read_manifest, write_manifest
from llmql.export.onnx_config import ENCODER, QL_DOCUMENT, QL_QUERY, onnx_config_for
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer, session
from llmql.export.shape_checks import check_document, check_encoder, check_query, query_cases, sequence_cases
from llmql.export.validate import EDGE_CASES, EDGE_QUERIES, ParityError, encoder_parity, ndcg_at_10, real_passages
from llmql.train.core.batching import pad
from llmql.train.core.config import save_llmql_config
from llmql.train.core.cpu import cpu_flags
from llmql.train.core.errors import LLMQLError, ModelError
from llmql.train.core.identity import model_identity
from llmql.train.core.model_sources import model_location
from llmql.train.core.tokenization import TOKENIZER_FILE, PromptTokenizer
from llmql.train.data import load_beir
from llmql.train.encoder import Encoder
from llmql.train.modeling import BiEncoder, compute_end_states, load_for_inference
from llmql.train.ql_scorer import QLScorer

if TYPE_CHECKING:
    from llmql.train.core.tokenization import PromptTokenizer

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
ENCODER_INT8_FILE = "encoder.int8.onnx"
QL_DOCUMENT_FILE = "ql_document.onnx"
QL_QUERY_FILE = "ql_query.onnx"


@dataclass(frozen=True)
class ExportConfig:
    model: str
    out: str
    quantize: Literal["none", "int8"] = "none"
    ql_scorer: bool = False
    opensearch_bundle: bool = False
    overwrite: bool = False
    opset: int = 17
    validation_data: str | None = None  # BEIR folder: real passages for parity, and the int8 nDCG slice
    min_cosine_fp32: float = 0.9999
    min_cosine_int8: float = 0.99
    max_ql_rel_diff: float = 1e-4  # |delta log P(q | d)| / max(1, |log P|), fp32


def export_model(cfg: ExportConfig) -> Path:
    out = Path(cfg.out).expanduser().resolve()
    _check_replaceable(out, cfg.overwrite)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        manifest = _export_into(cfg, tmp)
        write_manifest(tmp, manifest)
        _replace(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise LLMQLError(f"disk full while writing the export for {out}; nothing was left behind") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """--overwrite replaces an earlier llmql export and nothing else: a folder without a manifest, or holding
    files the manifest does not list, may hold a user's own work. Checked before the (long) export starts."""
    if not out.exists():
        if out.parent != out and not out.parent.exists():
            out.parent.mkdir(parents=True)
        return
    if not overwrite:
        raise LLMQLError(f"{out}: already exists; pass --overwrite to replace an earlier export")
    if not out.is_dir() or out == out.parent:
        raise LLMQLError(f"{out}: not an llmql export folder; --overwrite replaces only those")
    try:
        listed = set(read_manifest(out)["files"]) | {MANIFEST, SEARCH_FILE}
    except (FileNotFoundError, ValueError, KeyError):
        raise LLMQLError(
            f"{out}: has no llmql export manifest; --overwrite replaces only an earlier export, never another folder"
        ) from None
    present = {str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir()}
    foreign = sorted(present - listed)
    if foreign:
        raise LLMQLError(f"{out}: holds files that are not part of its export ({', '.join(foreign[:3])}); not replaced")
    locked = [d for d in [out, *(p for p in out.rglob("*") if p.is_dir())] if not os.access(d, os.W_OK | os.X_OK)]
    if locked or not os.access(out.parent, os.W_OK | os.X_OK):
        raise LLMQLError(f"{out}: cannot be deleted ({(locked or [out.parent])[0]} is not writable); not replaced")


def _replace(tmp: Path, out: Path) -> None:
    """Swap the finished export into place; the earlier one is deleted only once the new one is there, and a
    deletion that fails is undone rather than left as a hidden folder."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(tmp, out)
    try:
        shutil.rmtree(old)
    except OSError as err:
        os.replace(out, tmp)
        os.replace(old, out)
        raise LLMQLError(f"{out}: the earlier export could not be deleted ({err}); it was kept unchanged") from None


def _export_into(cfg: ExportConfig, tmp: Path) -> dict:

    lm, hf_tokenizer, model_config = load_for_inference(cfg.model, adapter=True)
    export_config = replace(model_config, adapter=None)
    prompt = PromptTokenizer(hf_tokenizer.backend_tokenizer, export_config)
    hf_tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER_FILE))
    save_llmql_config(tmp, export_config)

    _export_graph(lm, ENCODER, export_config.pad_token_id, cfg.opset, tmp / ENCODER_FILE)
    reference = Encoder(BiEncoder(lm, export_config.normalize), prompt, bf16=False)
    passages = real_passages(cfg.validation_data) + EDGE_CASES
    cases = sequence_cases(prompt, passages)
    shapes = {
        ENCODER_FILE: check_encoder(
            session(tmp / ENCODER_FILE),
            reference.model,
            cases,
            export_config.pad_token_id,
            cfg.min_cosine_fp32,
            ENCODER_FILE,
        )
    }
    parity = _validate_encoders(cfg, tmp, reference, prompt, passages)

    ql = None
    if cfg.ql_scorer:
        base = lm if not model_config.adapter else load_for_inference(cfg.model, adapter=False)[0]
        ql = _export_ql(base, prompt, cfg, tmp, passages)
        shapes.update(ql.pop("validated_shapes"))

    manifest = {
        "source": {
            "model": model_location(cfg.model),
            "identity": model_identity(cfg.model),
            "base_model": model_config.base_model,
        },
        "export_config": asdict(cfg),
        "embedding_dim": export_config.embedding_dim,
        "encoders": list(parity),
        "default_encoder": ENCODER_FILE,
        "graphs": {name: onnx_versions(tmp / name) for name in sorted(p.name for p in tmp.glob("*.onnx"))},
        "inputs": ["input_ids", "attention_mask"],
        "output": "embedding (L2-normalised last-token state)",
        "parity": parity,
        "validated_shapes": shapes,  # each graph against PyTorch at shapes its trace did not see
        "ql_scorer": ql,
    }
    if cfg.opensearch_bundle:
        from llmql.export.opensearch_bundle import write_bundles

        manifest["opensearch_bundle"] = write_bundles(tmp, export_config, reference)
    return manifest


def _validate_encoders(
    cfg: ExportConfig, tmp: Path, reference: Encoder, prompt: PromptTokenizer, passages: list
) -> dict[str, dict]:
    """Parity of each exported encoder graph against the PyTorch encoder, by file name.

    The int8 copy is written here (it is made from the checked fp32 graph) and, with validation data, its nDCG@10
    delta on a slice is recorded beside its cosines. Raises when a graph falls below its floor.
    """

    rows = prompt.passages([t for t, _ in passages], [x for _, x in passages]) + prompt.queries(EDGE_QUERIES)
    rows.append(rows[-1][:1] + rows[-1][-1:])  # a two-token row: one token and [E]

    def onnx_encoder(name: str) -> OnnxEncoder:
        return OnnxEncoder(session(tmp / name), prompt)

    def parity_of(name: str, floor: float) -> dict:
        encoder = onnx_encoder(name)  # one session for both padding sides, released once checked
        figures = encoder_parity(reference.encode_ids, lambda r, side: encoder.encode_ids(r, 8, side=side), rows)
        _check(figures, floor, name)
        return figures

    parity = {ENCODER_FILE: parity_of(ENCODER_FILE, cfg.min_cosine_fp32)}
    if cfg.quantize == "int8":
        _quantize_int8(tmp / ENCODER_FILE, tmp / ENCODER_INT8_FILE)
        int8 = parity_of(ENCODER_INT8_FILE, cfg.min_cosine_int8)
        if cfg.validation_data:
            int8["ndcg@10_slice"] = _int8_ndcg_delta(
                cfg.validation_data, onnx_encoder(ENCODER_FILE), onnx_encoder(ENCODER_INT8_FILE)
            )
        parity[ENCODER_INT8_FILE] = int8
    return parity


def _export_graph(lm, graph: str, pad_token_id: int, opset: int, path: Path) -> None:
    """Trace `graph` through Optimum's export (its model patcher, its dynamic axes)."""
    import warnings

    from optimum.exporters.onnx.convert import export_pytorch

    module = {ENCODER: EmbeddingGraph, QL_DOCUMENT: QLDocumentGraph, QL_QUERY: QLQueryGraph}[graph](lm)
    config = onnx_config_for(lm, graph, pad_token_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on shapes
        try:
            export_pytorch(module, config, opset, path)
        except (RuntimeError, ValueError, TypeError) as err:
            raise ModelError(f"ONNX export of the {graph} graph failed for {lm.config.model_type}: {err}") from err


def _check(result: dict, bar: float, name: str) -> None:
    worst = min(r["worst_cosine"] for r in result.values())
    if not worst >= bar:
        raise ParityError(f"{name}: worst cosine to PyTorch {worst:.6f} is below the bar {bar}; export refused")


def int8_exclusions(path: Path) -> list[str]:
    """MatMuls left in fp32 by dynamic int8: activation-by-activation products (attention scores and values,
    whose both inputs would be quantised per tensor) and the MLP down projections (their inputs carry the
    largest activation outliers). Measured on SmolLM2-135M: worst cosine to fp32 0.60 with everything
    quantised, 0.96 with these excluded (bench/results/int8_exclusions.json)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}

    def from_weight(name: str, depth: int = 0) -> bool:
        if name in weights:
            return True
        node = producers.get(name)
        if node is None or depth > 3 or node.op_type not in ("Transpose", "Cast", "Identity", "Constant"):
            return False
        return node.op_type == "Constant" or any(from_weight(i, depth + 1) for i in node.input)

    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and ("down_proj" in n.name or not any(from_weight(i) for i in n.input))
    ]


def _quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 through Optimum's ORTQuantizer, with the instruction set this CPU really has."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    flags = cpu_flags()
    options = {"is_static": False, "per_channel": True, "nodes_to_exclude": int8_exclusions(source)}
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        qconfig = AutoQuantizationConfig.avx512_vnni(**options)
    elif "avx512f" in flags:
        qconfig = AutoQuantizationConfig.avx512(**options)
    elif "avx2" in flags:
        qconfig = AutoQuantizationConfig.avx2(**options)
    else:
        qconfig = AutoQuantizationConfig.arm64(**options)
    work = source.parent / ".quantize"
    work.mkdir()
    try:
        quantizer = ORTQuantizer.from_pretrained(source.parent, file_name=source.name)
        quantizer.quantize(save_dir=work, quantization_config=qconfig, file_suffix="int8")
        os.replace(work / f"{source.stem}_int8.onnx", target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _int8_ndcg_delta(data_dir: str, fp32, int8, queries: int = 50, extra_docs: int = 300) -> dict[str, float]:
    """nDCG@10 of fp32 and int8 on a small slice: `queries` judged queries over their relevant documents plus
    the first `extra_docs` documents of the corpus."""

    root = Path(data_dir)
    split = "test" if (root / "qrels" / "test.tsv").is_file() else "train"
    data = load_beir(root, split)
    query_ids = sorted(data.qrels)[:queries]
    judged = [d for q in query_ids for d in data.qrels[q] if d in data.corpus]
    doc_ids = list(dict.fromkeys(judged + list(data.corpus)[:extra_docs]))
    docs = [data.corpus[d] for d in doc_ids]
    result = {}
    for name, encoder in (("fp32", fp32), ("int8", int8)):
        dv = encoder.encode_passages([d.text for d in docs], [d.title for d in docs])
        qv = encoder.encode_queries([data.queries[q] for q in query_ids])
        result[name] = ndcg_at_10(qv, dv, doc_ids, query_ids, data.qrels)
    result["delta"] = result["int8"] - result["fp32"]
    result["queries"], result["documents"] = len(query_ids), len(doc_ids)
    return result


def _ql_shapes(lm, prompt, cfg: ExportConfig, scorer: OnnxQLScorer, passages: list, vocab_size: int) -> dict:
    """Both QL graphs against PyTorch at shapes their traces did not see (`llmql.export.shape_checks`)."""
    import torch

    cases = sequence_cases(prompt, passages)
    pad_id = prompt.config.pad_token_id
    floor = cfg.min_cosine_fp32
    shapes = {QL_DOCUMENT_FILE: check_document(scorer.document, lm, cases, pad_id, floor, QL_DOCUMENT_FILE)}
    ids, mask = pad(prompt.passages([t for t, _ in passages], [x for _, x in passages]), pad_id)
    with torch.inference_mode():
        states = compute_end_states(lm, torch.from_numpy(ids), torch.from_numpy(mask))
    shapes[QL_QUERY_FILE] = check_query(
        scorer.query, lm, states, query_cases(prompt, vocab_size), cfg.max_ql_rel_diff, QL_QUERY_FILE
    )
    return shapes


def _export_ql(lm, prompt, cfg: ExportConfig, tmp: Path, passages: list[tuple[str, str]]) -> dict:
    """The QL scorer as two graphs, checked against the PyTorch full forward pass under Attention Stop."""

    _export_graph(lm, QL_DOCUMENT, prompt.config.pad_token_id, cfg.opset, tmp / QL_DOCUMENT_FILE)
    _export_graph(lm, QL_QUERY, prompt.config.pad_token_id, cfg.opset, tmp / QL_QUERY_FILE)
    vocab_size = int(lm.config.get_text_config().vocab_size)
    onnx_scorer = OnnxQLScorer(
        session(tmp / QL_DOCUMENT_FILE), session(tmp / QL_QUERY_FILE), prompt, vocab_size=vocab_size
    )
    shapes = _ql_shapes(lm, prompt, cfg, onnx_scorer, passages, vocab_size)  # first: a frozen shape fails clearly
    torch_scorer = QLScorer(lm, prompt, bf16=False)
    sample = passages[:16] + passages[-5:]
    titles, texts = [t for t, _ in sample], [x for _, x in sample]
    states = onnx_scorer.end_states(texts, titles)
    worst, worst_rel = 0.0, 0.0
    for query in EDGE_QUERIES:
        full = torch_scorer.score(query, texts, titles)
        diff = np.abs(full - onnx_scorer.score_states(query, states))
        worst = max(worst, float(diff.max()))
        worst_rel = max(worst_rel, float((diff / np.maximum(1.0, np.abs(full))).max()))
    if not worst_rel <= cfg.max_ql_rel_diff:
        raise ParityError(
            f"QL scorer: relative log P difference to PyTorch {worst_rel:.2e} exceeds "
            f"{cfg.max_ql_rel_diff} (absolute {worst:.2e})"
        )
    layers, kv_heads, head_dim = states.keys.shape[1:]
    return {
        "vocab_size": vocab_size,
        "validated_shapes": shapes,
        "files": {"document": QL_DOCUMENT_FILE, "query": QL_QUERY_FILE},
        "state_shape": {
            "layers": layers,
            "kv_heads": kv_heads,
            "head_dim": head_dim,
            "hidden": int(states.hidden.shape[1]),
        },
        "values_per_document": int(2 * layers * kv_heads * head_dim + states.hidden.shape[1]),
        "parity": {
            "max_abs_logprob_diff_vs_torch_full_forward": worst,
            "queries": len(EDGE_QUERIES),
            "passages": len(sample),
        },
    }
