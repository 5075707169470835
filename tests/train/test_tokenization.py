from dataclasses import replace

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


def _truncated_prompt(tok: PromptTokenizer, template: str, body: str, max_tokens: int) -> tuple[list[int], bool]:
    """The reference: tokenise all of the prompt, then drop the body's tokens past its `max_tokens`-th (the
    tokens lying in the body's characters, by their offsets); and whether any were."""
    prefix, suffix = split_template(template)
    enc = tok.tokenizer.encode(prefix + body + suffix, add_special_tokens=False)
    start, end = len(prefix.rstrip()), len(prefix) + len(body)
    inside = [i for i, (a, b) in enumerate(enc.offsets) if a >= start and b <= end]
    drop = set(inside[max_tokens:])
    return [t for i, t in enumerate(enc.ids) if i not in drop], bool(drop)


def _long_bodies(seed: int) -> list[str]:
    """Many times the budget, long unbroken words, newlines, non-ASCII, runs of spaces, empty."""
    rng = np.random.default_rng(seed)
    vocabulary = ["kelp", "fjord", "dune", "amber", "naïve café", "日本", "x" * 90, "\n", "  ", "ü-ü", "the"]
    bodies = [" ".join(rng.choice(vocabulary, size=int(rng.integers(1, 400)))) for _ in range(40)]
    return [b.strip() for b in bodies] + ["", "kelp", "x" * 5000, "日本" * 3000]


@pytest.mark.parametrize("seed", range(6))
def test_one_pass_over_a_prefix_gives_the_whole_prompts_truncation(tok, seed):
    """Passages and queries tokenised once, over only a prefix of each long body, equal the whole prompt's
    tokenisation with the body's tokens past the budget dropped; the cut count counts the bodies that lost any."""
    bodies = _long_bodies(seed)
    for max_tokens in (1, 5, 12, 64):
        config = replace(tok.config, max_passage_tokens=max_tokens, max_query_tokens=max_tokens)
        cut_tok = PromptTokenizer(tok.tokenizer, config)
        rows, cut = cut_tok.passages_counting_cuts([""] * len(bodies), bodies)
        expected = [_truncated_prompt(tok, config.prompts.passage, b, max_tokens) for b in bodies]
        assert rows == [cut_tok._finish(ids) for ids, _ in expected]
        assert cut == sum(dropped for _, dropped in expected) > 0
        queries = [_truncated_prompt(tok, config.prompts.query, b, max_tokens)[0] for b in bodies]
        assert cut_tok.queries(bodies) == [cut_tok._finish(ids) for ids in queries]


def test_a_tokenizer_merging_across_the_bodys_edge_cuts_the_text_instead(tok):
    """A BPE without a pre-tokeniser merges the template's characters with the body's: there the body is cut as
    text at its kept tokens' end and the prompt tokenised again, so no token carries text from past the cut."""
    from tokenizers import Tokenizer, models, trainers

    merging = Tokenizer(models.BPE(unk_token="<unk>"))
    merging.train_from_iterator(
        [f"Passage: kelp fjord dune {i}|end" for i in range(50)],
        trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"]),
    )
    config = replace(tok.config, max_passage_tokens=3, bos_token_id=None, end_token_id=1)
    merge_tok = PromptTokenizer(
        merging, replace(config, prompts=replace(config.prompts, passage="Passage: {body}|end"))
    )
    bodies = ["kelp fjord dune", "kelp fjord dune amber kelp fjord dune", "dune"]
    assert not all(row.body.clean for row in merge_tok._cut_prompts("Passage: ", bodies, "|end", 3))
    for body, row in zip(bodies, merge_tok.passages([""] * len(bodies), bodies), strict=True):
        prompts = [[*merging.encode(f"Passage: {body[:c]}|end").ids, 1] for c in range(len(body) + 1)]
        assert row in prompts and row != prompts[-1]  # the prompt of a shorter body, as the tokenizer writes it
