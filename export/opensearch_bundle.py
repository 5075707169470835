"""Bundles that OpenSearch ml-commons can register as TEXT_EMBEDDING models.

ml-commons tokenises raw text with the bundle's `tokenizer.json` and feeds only `input_ids` and
`attention_mask` to the graph (onnxruntime 1.16.3: IR <= 9, opset <= 19). llmql's prompts must therefore live in
the tokenizer: the template's post-processor adds the instruction prefix and suffix, and [E], as multi-token
special tokens. Queries and passages have different prompts, so there is one bundle for each, sharing the graph.
The graph already pools and normalises and returns [1, H]; ml-commons' CLS pooling takes that row as it is.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

from llmql.export.manifest import onnx_versions, sha256
from llmql.export.validate import EDGE_QUERIES
from llmql.train.core.config import ModelConfig
from llmql.train.core.prompts import split_template
from llmql.train.core.tokenization import TOKENIZER_FILE

BUNDLE_DIR = "opensearch"
MAX_IR, MAX_OPSET = 9, 19


def _add_prefix_space(node: dict) -> None:
    """Make the body's first word tokenise as it does after `Passage: ` (e.g. `Ġword`, `▁word`)."""
    if not isinstance(node, dict):
        return
    if node.get("type") == "ByteLevel":
        node["add_prefix_space"] = True
    if node.get("type") == "Metaspace":
        node["prepend_scheme"] = "always"
    for child in node.get("pretokenizers", []) or []:
        _add_prefix_space(child)


def prompt_tokenizer_json(tokenizer_json: dict, config: ModelConfig, template: str, budget: int, encode) -> dict:
    """A tokenizer.json whose post-processor wraps any text in `template` and appends [E]."""
    prefix, suffix = split_template(template)
    head = ([config.bos_token_id] if config.bos_token_id is not None else []) + encode(prefix.rstrip())
    tail = [*encode(suffix), config.end_token_id]
    spec = copy.deepcopy(tokenizer_json)
    _add_prefix_space(spec.get("pre_tokenizer") or {})
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": "llmql_prefix", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "llmql_suffix", "type_id": 0}},
        ],
        "pair": [
            {"SpecialToken": {"id": "llmql_prefix", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 0}},
            {"SpecialToken": {"id": "llmql_suffix", "type_id": 0}},
        ],
        "special_tokens": {
            "llmql_prefix": {"id": "llmql_prefix", "ids": head, "tokens": [f"<p{i}>" for i in range(len(head))]},
            "llmql_suffix": {"id": "llmql_suffix", "ids": tail, "tokens": [f"<s{i}>" for i in range(len(tail))]},
        },
    }
    spec["truncation"] = {
        "direction": "Right",
        "max_length": budget + len(head) + len(tail),
        "strategy": "LongestFirst",
        "stride": 0,
    }
    spec["padding"] = None
    return spec


def write_bundles(export_dir: Path, config: ModelConfig, reference) -> dict:
    """Write `opensearch/{passage,query}-model.zip` and their register-model JSON; return their manifest entry.

    `reference` is the PyTorch Encoder, used to measure how close ml-commons-style tokenisation comes to llmql's.
    """
    from tokenizers import Tokenizer

    graph = export_dir / "encoder.onnx"
    versions = onnx_versions(graph)
    if versions["ir_version"] > MAX_IR or versions["opset"] > MAX_OPSET:
        raise ValueError(
            f"{graph}: IR {versions['ir_version']} / opset {versions['opset']} is newer than "
            f"ml-commons' onnxruntime 1.16.3 takes (IR <= {MAX_IR}, opset <= {MAX_OPSET})"
        )
    base = json.loads((export_dir / TOKENIZER_FILE).read_text(encoding="utf-8"))
    plain = Tokenizer.from_file(str(export_dir / TOKENIZER_FILE))

    def encode(text: str) -> list[int]:
        return plain.encode(text, add_special_tokens=False).ids

    out_dir = export_dir / BUNDLE_DIR
    out_dir.mkdir()
    entry = {}
    for side, template, budget in (
        ("passage", config.prompts.passage, config.max_passage_tokens),
        ("query", config.prompts.query, config.max_query_tokens),
    ):
        spec = prompt_tokenizer_json(base, config, template, budget, encode)
        zip_path = out_dir / f"{side}-model.zip"
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as bundle:
            bundle.write(graph, "model.onnx")
            bundle.writestr(TOKENIZER_FILE, json.dumps(spec))
        register = {
            "name": f"llmql-{side}",
            "version": "1.0.0",
            "description": f"llmql {side} encoder: LLM-QL last-token embedding, prompts applied by the tokenizer",
            "model_format": "ONNX",
            "function_name": "TEXT_EMBEDDING",
            "model_content_hash_value": sha256(zip_path),
            "model_config": {
                "model_type": "llama",  # anything but bert/albert: no token_type_ids are fed
                "embedding_dimension": config.embedding_dim,
                "framework_type": "sentence_transformers",
                "pooling_mode": "CLS",  # the graph's [1, H] output is already the pooled, normalised vector
                "normalize_result": True,
            },
        }
        (out_dir / f"{side}-model_config.json").write_text(json.dumps(register, indent=2) + "\n")
        entry[side] = {
            "zip": str(zip_path.relative_to(export_dir)),
            "model_config": f"{BUNDLE_DIR}/{side}-model_config.json",
            "tokenizer_parity": _tokenizer_parity(spec, side, reference),
        }
    entry["onnx"] = versions
    return entry


def _tokenizer_parity(spec: dict, side: str, reference) -> dict:
    """Cosine between embeddings of ml-commons-style token ids and llmql's own, on a few texts."""
    import numpy as np
    from tokenizers import Tokenizer

    texts = [
        *EDGE_QUERIES,
        "Microstructural development of human newborn cerebral white matter.",
        "The effect of aspirin on cardiovascular events in diabetic patients",
    ]
    bundle_tok = Tokenizer.from_str(json.dumps(spec))
    bundle_rows = [bundle_tok.encode(t).ids for t in texts]
    own_rows = (
        reference.tokenizer.queries(texts)
        if side == "query"
        else reference.tokenizer.passages([""] * len(texts), texts)
    )
    a, b = reference.encode_ids(bundle_rows), reference.encode_ids(own_rows)
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    identical = sum(x == y for x, y in zip(bundle_rows, own_rows, strict=True))
    return {"worst_cosine": float(cosine.min()), "identical_token_rows": identical, "texts": len(texts)}
