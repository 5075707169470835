import numpy as np
import pytest

from llmql.train.core.config import ModelConfig, PromptConfig, from_dict, to_dict
from llmql.train.core.prompts import MASK_WORD, corrupt_words, split_template
from llmql.train.core.tokenization import Corruption, PromptTokenizer
from llmql.train.modeling import build_model_config, load_causal_lm, load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    config = build_model_config(tokenizer, load_causal_lm(tiny_llama), "tiny", max_passage_tokens=12)
    return PromptTokenizer(tokenizer.backend_tokenizer, config)


def test_word_corruption_rate_is_within_tolerance():
    body = " ".join(f"w{i}" for i in range(20000))
    out = corrupt_words(body, 0.6, np.random.default_rng(0)).split()
    assert len(out) == 20000
    assert abs(out.count(MASK_WORD) / len(out) - 0.6) < 0.015
    assert corrupt_words(body, 0.0, np.random.default_rng(0)) == body


def test_prompt_words_are_never_corrupted(tok):
    clean = tok.passages(["amber report"], ["kelp fjord dune"])[0]
    masked = tok.passages(["amber report"], ["kelp fjord dune"], Corruption(1.0, "word"), np.random.default_rng(0))[0]
    text = tok.tokenizer.decode(masked, skip_special_tokens=True)
    prefix, suffix = split_template(PromptConfig().passage)
    assert text.startswith(prefix.strip()) and text.endswith(suffix)
    assert "amber" not in text and "kelp" not in text and text.count(MASK_WORD) == 5
    assert masked[0] == clean[0] and masked[-1] == clean[-1]  # BOS and [E] untouched


def test_token_corruption_touches_only_body_tokens(tok):
    clean = tok.passages(["amber"], ["kelp fjord dune"])[0]
    masked = tok.passages(["amber"], ["kelp fjord dune"], Corruption(1.0, "token"), np.random.default_rng(0))[0]
    changed = [i for i, (a, b) in enumerate(zip(clean, masked, strict=True)) if a != b]
    assert changed and all(masked[i] == tok.config.mask_token_id for i in changed)
    prefix_len = len(tok.tokenizer.encode(split_template(PromptConfig().passage)[0].rstrip()).ids)
    assert min(changed) >= prefix_len


def test_fresh_corruption_per_draw(tok):
    text = " ".join(["kelp"] * 10)
    a = tok.passages([""], [text], Corruption(0.5), np.random.default_rng([1, 0, 3]))[0]
    b = tok.passages([""], [text], Corruption(0.5), np.random.default_rng([1, 1, 3]))[0]
    again = tok.passages([""], [text], Corruption(0.5), np.random.default_rng([1, 0, 3]))[0]
    assert a != b and a == again


def test_passage_body_is_truncated_to_its_budget_but_keeps_the_prompt(tok):
    short = tok.passages([""], ["kelp"])[0]
    long = tok.passages([""], [" ".join(["kelp fjord dune amber"] * 50)])[0]
    body_budget = tok.config.max_passage_tokens
    assert len(long) - len(short) <= body_budget + 1
    assert long[-1] == tok.config.end_token_id


def test_ql_query_ends_with_eos_and_respects_budget(tok):
    ids = tok.ql_queries(["kelp " * 500])[0]
    assert ids[-1] == tok.config.end_token_id and len(ids) == tok.config.max_query_tokens + 1


def test_config_round_trip():
    config = ModelConfig(base_model="m", end_token_id=2, pad_token_id=2, bos_token_id=None, adapter="adapter")
    assert from_dict(ModelConfig, to_dict(config)) == config
    with pytest.raises(ValueError, match="unknown field"):
        from_dict(ModelConfig, {**to_dict(config), "typo": 1})


def loader_batches(dataset, tok, workers: int = 0) -> list[dict]:
    """One epoch of `dataset` in a fixed shuffled order, prepared by `workers` DataLoader processes."""
    import torch
    from torch.utils.data import DataLoader

    from llmql.train.collate import collate_ql

    order = torch.Generator().manual_seed(11)
    loader = DataLoader(
        dataset,
        batch_size=4,
        shuffle=True,
        generator=order,
        num_workers=workers,
        collate_fn=lambda items: collate_ql(items, tok.config.pad_token_id),
    )
    return list(loader)


def test_loader_workers_prepare_the_same_batches_as_the_training_loop(tok):
    """Tokenisation and Input Corruption in DataLoader worker processes give the batches the in-loop path gives
    (random draws depend on seed, epoch and index, not on which process draws them)."""
    import torch

    from llmql.train.collate import QLExamples
    from llmql.train.data import Doc

    pairs = [(f"query {i}", Doc(f"d{i}", f"title {i}", " ".join(f"w{i}x{j}" for j in range(30)))) for i in range(24)]
    dataset = QLExamples(pairs, tok, Corruption(0.6), seed=5)
    dataset.set_epoch(3)
    alone, workers = loader_batches(dataset, tok), loader_batches(dataset, tok, workers=2)
    assert len(alone) == len(workers) == 6
    for a, b in zip(alone, workers, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    dataset.set_epoch(4)  # the same order in another epoch: other corruption draws
    assert not torch.equal(alone[0]["input_ids"], loader_batches(dataset, tok)[0]["input_ids"])


def _whole_text_cut(tok: PromptTokenizer, body: str, max_tokens: int) -> str:
    """The reference: tokenise all of the body, cut after its max_tokens-th token."""
    enc = tok.tokenizer.encode(body, add_special_tokens=False)
    return body if len(enc.ids) <= max_tokens else body[: enc.offsets[max_tokens - 1][1]]


@pytest.mark.parametrize("seed", range(6))
def test_cutting_a_prefix_gives_the_whole_texts_cut(tok, seed):
    """Long bodies (many times the budget, long unbroken words, newlines, non-ASCII, runs of spaces) are cut at
    the same character as when the whole text is tokenised, though only a prefix is."""
    rng = np.random.default_rng(seed)
    vocabulary = ["kelp", "fjord", "dune", "amber", "naïve café", "日本", "x" * 90, "\n", "  ", "ü-ü", "the"]
    bodies = [" ".join(rng.choice(vocabulary, size=int(rng.integers(1, 400)))) for _ in range(40)] + [
        "",
        "kelp",
        "x" * 5000,
        "日本" * 3000,
    ]
    for max_tokens in (1, 5, 12, 64):
        assert tok._truncate(bodies, max_tokens) == [_whole_text_cut(tok, b, max_tokens) for b in bodies]
