"""Optimum ONNX configs for llmql's graphs.

Each config subclasses the one Optimum registers for the model's architecture, so the export runs under that
architecture's model patcher (traceable masks, SDPA and cache updates) and fails with Optimum's own message for
an architecture it cannot export. Only the inputs, outputs and dummy inputs are llmql's.
"""

from __future__ import annotations

import copy

import torch

from llmql.train.core.errors import ModelError

ENCODER, QL_DOCUMENT, QL_QUERY = "encoder", "ql_document", "ql_query"


def _dims(lm) -> tuple[int, int, int]:
    config = lm.config.get_text_config()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or heads, head_dim


_END_STATE_AXES = {name: {0: "batch_size"} for name in ("end_keys", "end_values", "end_hidden", "end_position")}
_INPUT_AXES = {
    QL_QUERY: {"input_ids": {0: "batch_size", 1: "query_length"}, **_END_STATE_AXES},
    "sequence": {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "sequence_length"},
    },
}
_OUTPUT_AXES = {
    ENCODER: {"embedding": {0: "batch_size"}},
    QL_DOCUMENT: _END_STATE_AXES,
    QL_QUERY: {"token_logprobs": {0: "batch_size", 1: "query_length"}},
}


def dummy_inputs(lm, graph: str, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Batch 2, left padding on one row, so the trace sees real variable-length input."""
    generator = torch.Generator().manual_seed(0)
    config = lm.config.get_text_config()
    if graph == QL_QUERY:
        layers, kv_heads, head_dim = _dims(lm)
        return {
            "input_ids": torch.randint(3, config.vocab_size, (2, 5), generator=generator),
            "end_keys": torch.randn(2, layers, kv_heads, head_dim, generator=generator),
            "end_values": torch.randn(2, layers, kv_heads, head_dim, generator=generator),
            "end_hidden": torch.randn(2, config.hidden_size, generator=generator),
            "end_position": torch.tensor([11, 7]),
        }
    ids = torch.randint(3, config.vocab_size, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    ids[1, :4] = pad_token_id
    return {"input_ids": ids, "attention_mask": mask}


def onnx_config_for(lm, graph: str, pad_token_id: int):
    """An OnnxConfig instance for `graph` (encoder, ql_document or ql_query) of this model's architecture."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers Optimum's ONNX configs)
    from optimum.exporters.tasks import TasksManager

    try:
        constructor = TasksManager.get_exporter_config_constructor(
            exporter="onnx", model=lm, task="feature-extraction", library_name="transformers"
        )
    except (KeyError, ValueError) as err:
        raise ModelError(f"Optimum cannot export this architecture ({lm.config.model_type}): {err}") from None
    base = constructor.func if hasattr(constructor, "func") else constructor

    class LLMQLOnnxConfig(base):  # type: ignore[misc, valid-type]
        @property
        def inputs(self):
            return copy.deepcopy(_INPUT_AXES[QL_QUERY if graph == QL_QUERY else "sequence"])

        @property
        def outputs(self):
            return copy.deepcopy(_OUTPUT_AXES[graph])

        def generate_dummy_inputs(self, framework: str = "pt", **kwargs):
            return dummy_inputs(lm, graph, pad_token_id)

    return LLMQLOnnxConfig(lm.config, task="feature-extraction")
