"""Packed rows (several examples a row, each with its own positions and masks) give the padded batch's
log-probabilities, embeddings and gradients; FlexAttention's BlockMask gives the dense mask's."""

import numpy as np
import pytest
import torch

from llmql.train.collate import collate_contrastive, collate_ql, pack_rows, packed
from llmql.train.losses import ql_loss
from llmql.train.masks import attention_stop_mod, dense
from llmql.train.modeling import BiEncoder, QLModel
from tests.train.test_modeling import PASSAGES, TITLES, _load

QUERIES = ["amber study", "kelp", "granite ridge results in many cases and more", "ridge", "kelp kelp data"]


def test_rows_are_filled_first_fit_longest_first():
    assert pack_rows([5, 3, 4, 2, 9], capacity=8) == [[4], [0, 1], [2, 3]]
    assert pack_rows([], capacity=8) == []


def test_a_packed_batch_by_hand():
    batch = packed([[7, 8, 9], [5], [6, 6]], pad_id=0, capacity=4)
    assert batch["input_ids"].tolist() == [[7, 8, 9, 5], [6, 6, 0, 0]]
    assert batch["examples"].tolist() == [[0, 0, 0, 1], [2, 2, -1, -1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]
    assert batch["last"].tolist() == [[0, 2], [0, 3], [1, 1]]  # each example's final token, in example order


def test_the_packed_attention_stop_mask_by_hand():
    # row: d [E] q | d' [E]' q' ; the second example's [E] at 4
    examples = torch.tensor([[0, 0, 0, 1, 1, 1]])
    ends = torch.tensor([[1, 1, 1, 4, 4, 4]])
    mask = dense(attention_stop_mod(examples, ends), 1, 6, "cpu")[0, 0].int()
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],  # q sees [E] and itself
            [0, 0, 0, 1, 0, 0],  # d' never sees the first example
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 1, 1],  # q' sees [E]' and itself
        ]
    )
    assert torch.equal(mask, expected)


def _ql_items(tok):
    rows = tok.passages([*TITLES, "", "x"], [*PASSAGES, "amber", "kelp lagoon basalt"])
    return [{"passage": p, "query": q} for p, q in zip(rows, tok.ql_queries(QUERIES), strict=True)]


@pytest.mark.parametrize("loss_on", ["query", "all"])
def test_packed_stage_1_gives_the_padded_loss_and_gradients(tiny_any, loss_on):
    lm, tok = _load(tiny_any)
    items = _ql_items(tok)
    results = []
    for pack in (None, 64):
        batch = collate_ql(items, tok.config.pad_token_id, loss_on, pack)
        lm.zero_grad()
        loss = ql_loss(QLModel(lm, True)(**batch), batch["target_mask"])
        loss.backward()
        grads = {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, int(batch["target_mask"].sum()), batch["input_ids"].shape[0]))
    (padded, g_padded, n_padded, rows_padded), (packed_loss, g_packed, n_packed, rows_packed) = results
    assert n_packed == n_padded and rows_packed < rows_padded  # the same targets, in fewer rows
    torch.testing.assert_close(packed_loss, padded, atol=1e-5, rtol=1e-5)
    for name in g_padded:
        torch.testing.assert_close(g_packed[name], g_padded[name], atol=1e-5, rtol=1e-4, msg=name)


def test_packed_stage_2_gives_the_padded_embeddings(tiny_any):
    lm, tok = _load(tiny_any)
    items = [{"query": q, "passages": tok.passages(TITLES, PASSAGES)} for q in tok.queries(QUERIES[:2])]
    padded = collate_contrastive(items, tok.config.pad_token_id)
    batch = collate_contrastive(items, tok.config.pad_token_id, pack_tokens=64)
    encoder = BiEncoder(lm)
    with torch.no_grad():
        for side in ("query", "passage"):
            want = encoder(padded[f"{side}_ids"], padded[f"{side}_mask"])
            got = encoder(
                batch[f"{side}_ids"],
                batch[f"{side}_mask"],
                examples=batch[f"{side}_examples"],
                position_ids=batch[f"{side}_positions"],
                last=batch[f"{side}_last"],
            )
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert batch["passage_ids"].shape[0] < padded["passage_ids"].shape[0]


@pytest.mark.slow
def test_flex_attention_gives_the_dense_masks(tiny_llama):
    """The same predicate as a BlockMask (FlexAttention, compiled here for the CPU) and as a dense mask."""
    from llmql.train.attention import set_route

    lm, tok = _load(tiny_llama)
    batch = collate_ql(_ql_items(tok), tok.config.pad_token_id, "query", 128)
    targets = batch["target_mask"].bool()
    with torch.no_grad():
        want = QLModel(lm, True, route="dense")(**batch)
        set_route(lm, "flex")
        got = QLModel(lm, True, route="flex")(**batch)
    set_route(lm, "dense")
    torch.testing.assert_close(got[targets], want[targets], atol=1e-4, rtol=0)
    assert np.isfinite(got[targets].numpy()).all()


@pytest.mark.cuda
def test_a_flex_training_step_on_cuda_matches_the_dense_one(tmp_path):
    """FlexAttention's CUDA kernels need heads of at least 16 dimensions (the tiny model's 8 were refused on an
    H200: "NYI: embedding dimension ... must be at least 16")."""
    from llmql.train.attention import set_route
    from tests.conftest import build_tiny_model

    lm, tok = _load(build_tiny_model(tmp_path / "tiny", hidden=64))
    lm = lm.cuda()
    batch = {k: v.cuda() for k, v in collate_ql(_ql_items(tok), tok.config.pad_token_id, "query", 128).items()}
    losses = []
    for route in ("dense", "flex"):
        set_route(lm, route)
        losses.append(ql_loss(QLModel(lm, True, route=route)(**batch), batch["target_mask"]))
    set_route(lm, "dense")
    torch.testing.assert_close(losses[1], losses[0], atol=1e-4, rtol=1e-4)
