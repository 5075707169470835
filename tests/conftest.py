"""Shared fixtures: tiny random decoders with a tiny BPE tokenizer, built from a config (never a hub)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Sync state, converted models and quickstart work go to a throw-away cache, never the user's ~/.cache/llmql
# (subprocesses started by tests inherit it).
# What scripts/bootstrap installed there (the legacy onnxruntime) is still read from INSTALL_CACHE.
INSTALL_CACHE = Path(os.environ.get("LLMQL_CACHE", Path.home() / ".cache" / "llmql"))
os.environ["LLMQL_CACHE"] = tempfile.mkdtemp(prefix="llmql-test-cache-")

from tests.toydata import toy_text, write_toy_beir  # noqa: E402 (after the environment is set)


def build_tokenizer(arch: str):
    """A ~300-token byte-level BPE; Llama/Mistral/Gemma style add a BOS, Qwen2 style does not."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {
        "qwen2": {"eos": "<|endoftext|>", "pad": "<|endoftext|>", "bos": None},
        "gemma3_text": {"eos": "<eos>", "pad": "<pad>", "bos": "<bos>"},
    }.get(arch, {"eos": "</s>", "pad": None, "bos": "<s>"})
    tokens = [t for t in dict.fromkeys([specials["bos"], specials["eos"], specials["pad"], "<unk>"]) if t]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(toy_text(), trainer)
    if specials["bos"]:
        bos = specials["bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=specials["bos"],
        eos_token=specials["eos"],
        pad_token=specials["pad"],
        unk_token="<unk>",
    )


def build_tiny_model(
    directory: Path, arch: str = "llama", seed: int = 0, hidden: int = 32, vocab_size: int | None = None
) -> Path:
    """Save a randomly initialised 2-layer decoder (4 heads of `hidden` / 4) and its tokenizer to `directory`;
    `vocab_size` widens the LM head past the tokenizer's ~700 tokens (a real model's vocabulary, to size logits)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = build_tokenizer(arch)
    common = dict(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if arch == "gemma3_text":
        common.update(head_dim=8, sliding_window=16, query_pre_attn_scalar=8)
    config = AutoConfig.for_model(arch, **common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="session", params=["llama", "qwen2", "mistral", "gemma3_text"])
def tiny_any(request, tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.fixture(scope="session")
def tiny_export(tiny_llama, tmp_path_factory) -> Path:
    """A tiny-Llama export with the QL scorer."""
    from llmql.export.convert import ExportConfig, export_model

    out = tmp_path_factory.mktemp("exp") / "export"
    return export_model(ExportConfig(model=str(tiny_llama), out=str(out), ql_scorer=True))


@pytest.fixture(scope="session")
def other_export(tiny_qwen2, tmp_path_factory) -> Path:
    """An export of another model (tiny Qwen2, same dimension as tiny Llama), for model-mismatch tests."""
    from llmql.export.convert import ExportConfig, export_model

    return export_model(ExportConfig(model=str(tiny_qwen2), out=str(tmp_path_factory.mktemp("other") / "export")))


@pytest.fixture(scope="session")
def toy_beir(tmp_path_factory) -> Path:
    return write_toy_beir(tmp_path_factory.mktemp("toy-beir"))


def server_url(engine: str) -> str:
    """URL of a real server from the environment (`opensearch-cluster`: its nodes' URLs, comma-separated); in CI a
    missing server is a failure, locally a skip."""
    variable = f"LLMQL_{engine.upper().replace('-', '_')}_URL"
    url = os.environ.get(variable)
    if url:
        return url
    message = (
        f"{variable} is not set: start one with `scripts/search-server start {engine}` "
        'and `eval "$(scripts/search-server env)"`'
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(
    params=[
        "embedded",
        "memory",
        pytest.param("opensearch", marks=pytest.mark.live),
        pytest.param("elasticsearch", marks=pytest.mark.live),
    ]
)
def backend_spec(request, tmp_path):
    """(backend name, location) for each engine: a fresh directory, or a real server's URL."""
    if request.param == "embedded":
        return "embedded", str(tmp_path / "lancedb")
    if request.param == "memory":
        return "memory", str(tmp_path / "memory")
    return request.param, server_url(request.param)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA device: where there is none they skip, saying so (CI has none)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; this machine has none (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
