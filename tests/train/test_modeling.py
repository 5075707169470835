import numpy as np
import pytest
import torch

from llmql.train.core.batching import pad
from llmql.train.core.errors import ModelError
from llmql.train.core.tokenization import PromptTokenizer
from llmql.train.masks import attention_stop_mask, position_ids_from_mask
from llmql.train.modeling import (
    BiEncoder,
    attention_bias,
    build_model_config,
    decoder_of,
    load_causal_lm,
    load_tokenizer,
)
from llmql.train.ql_scorer import QLScorer

PASSAGES = ["the study shows amber amber data", "kelp", "granite ridge models improve results in many cases"]
TITLES = ["amber report", "", "ridge"]


def _load(path):
    tokenizer = load_tokenizer(path)
    lm = load_causal_lm(path).eval()
    config = build_model_config(tokenizer, lm, str(path))
    return lm, PromptTokenizer(tokenizer.backend_tokenizer, config)


def _query_hidden(lm, ids, allowed):
    attention = torch.ones_like(ids)
    with torch.no_grad():
        return decoder_of(lm)(
            input_ids=ids, attention_mask=attention_bias(allowed, lm), position_ids=position_ids_from_mask(attention)
        ).last_hidden_state


def test_query_sees_document_only_through_end_token(tiny_llama):
    lm, tok = _load(tiny_llama)
    query = tok.ql_queries(["amber study"])[0]
    doc_a = tok.passages(["amber report"], ["the study shows amber amber"])[0]
    doc_b = tok.passages(["kelp notes"], ["fjord lagoon kelp kelp dune"])[0]
    assert len(doc_a) == len(doc_b)  # same positions, different document tokens
    e = len(doc_a) - 1
    ids_a, ids_b = torch.tensor([doc_a + query]), torch.tensor([doc_b + query])
    allowed = attention_stop_mask(torch.ones_like(ids_a), torch.tensor([e]))
    q_rows = slice(e + 1, None)
    # Through [E], the document still reaches the query...
    assert not torch.allclose(
        _query_hidden(lm, ids_a, allowed)[0, q_rows], _query_hidden(lm, ids_b, allowed)[0, q_rows]
    )
    # ...and only through [E]: block [E] as well and the query states no longer depend on the document.
    blocked = allowed.clone()
    blocked[:, :, q_rows, e] = False
    ha, hb = _query_hidden(lm, ids_a, blocked), _query_hidden(lm, ids_b, blocked)
    assert torch.allclose(ha[0, q_rows], hb[0, q_rows], atol=1e-6)


def test_cached_end_states_give_the_full_forward_scores(tiny_any):
    scorer = QLScorer.from_pretrained(tiny_any, bf16=False)
    full = scorer.score("amber study results", PASSAGES, TITLES)
    cached = scorer.score_states("amber study results", scorer.end_states(PASSAGES, TITLES, batch_size=2))
    assert np.isfinite(full).all()
    np.testing.assert_allclose(cached, full, atol=1e-4, rtol=0)


def test_embedding_is_the_same_for_left_and_right_padding(tiny_any):
    lm, tok = _load(tiny_any)
    rows = tok.passages(TITLES, PASSAGES)
    encoder = BiEncoder(lm)
    with torch.no_grad():
        right = encoder(*map(torch.from_numpy, pad(rows, tok.config.pad_token_id, "right")))
        left = encoder(*map(torch.from_numpy, pad(rows, tok.config.pad_token_id, "left")))
        alone = torch.cat([encoder(*map(torch.from_numpy, pad([r], tok.config.pad_token_id))) for r in rows])
    assert torch.allclose(right, left, atol=1e-5)
    assert torch.allclose(right, alone, atol=1e-5)
    assert not torch.isnan(right).any()


def test_model_config_follows_the_tokenizer(tiny_llama, tiny_qwen2):
    _, llama = _load(tiny_llama)
    _, qwen = _load(tiny_qwen2)
    assert llama.config.bos_token_id is not None and qwen.config.bos_token_id is None
    assert llama.passages([""], ["kelp"])[0][0] == llama.config.bos_token_id
    for tok in (llama, qwen):
        assert tok.passages([""], ["kelp"])[0][-1] == tok.config.end_token_id
        assert tok.queries(["kelp"])[0][-1] == tok.config.end_token_id


def test_model_without_eos_is_refused(tmp_path, tiny_llama):
    import shutil

    from transformers import AutoTokenizer

    broken = tmp_path / "no-eos"
    shutil.copytree(tiny_llama, broken)
    tokenizer = AutoTokenizer.from_pretrained(broken)
    tokenizer.eos_token = None
    tokenizer.save_pretrained(broken)
    with pytest.raises(ModelError, match="no EOS"):
        load_tokenizer(broken)


def test_directory_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not a model directory"):
        load_causal_lm(tmp_path)


def _ql_batch(tok, loss_on: str):
    from llmql.train.collate import collate_ql

    queries = ["amber study", "kelp", "granite ridge results in many cases and more"]
    items = [
        {"passage": p, "query": q} for p, q in zip(tok.passages(TITLES, PASSAGES), tok.ql_queries(queries), strict=True)
    ]
    return collate_ql(items, tok.config.pad_token_id, loss_on)


@pytest.mark.parametrize("loss_on", ["query", "all"])
@pytest.mark.parametrize("attention_stop", [True, False])
def test_fused_attention_gives_the_dense_mask_log_probabilities(tiny_any, loss_on, attention_stop):
    """The two-pass route with no mask tensor equals the per-example [B, 1, L, L] mask within 1e-5 (fp32)."""
    from llmql.train.modeling import QLModel, causal_kernel_fits

    lm, tok = _load(tiny_any)
    batch = _ql_batch(tok, loss_on)
    args = (batch["input_ids"], batch["attention_mask"], batch["end_positions"], batch["target_mask"])
    with torch.no_grad():
        dense = QLModel(lm, attention_stop)(*args)
        fused = QLModel(lm, attention_stop, right_padded=True, route="two-pass")(*args)
    targets = batch["target_mask"].bool()
    assert targets.sum() > 10 and torch.isfinite(dense[targets]).all()
    torch.testing.assert_close(fused[targets], dense[targets], atol=1e-5, rtol=0)
    assert (fused[~targets] == 0).all()
    if lm.config.model_type == "gemma3_text":  # a 16-token sliding window is shorter than the rows
        assert not causal_kernel_fits(lm, batch["input_ids"].shape[1])


def test_fused_attention_gives_the_dense_mask_gradients(tiny_llama):
    from llmql.train.losses import ql_loss
    from llmql.train.modeling import QLModel

    lm, tok = _load(tiny_llama)
    batch = _ql_batch(tok, "query")
    args = (batch["input_ids"], batch["attention_mask"], batch["end_positions"], batch["target_mask"])
    grads = []
    for right_padded in (False, True):
        lm.zero_grad()
        ql_loss(QLModel(lm, True, right_padded, route="two-pass")(*args), batch["target_mask"]).backward()
        grads.append({n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 5
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)


def test_embedding_on_the_causal_kernel_equals_the_masked_one(tiny_any):
    lm, tok = _load(tiny_any)
    ids, mask = map(torch.from_numpy, pad(tok.passages(TITLES, PASSAGES), tok.config.pad_token_id, "right"))
    with torch.no_grad():
        torch.testing.assert_close(
            BiEncoder(lm, right_padded=True)(ids, mask), BiEncoder(lm)(ids, mask), atol=1e-5, rtol=0
        )


def test_causal_routes_hand_the_kernel_no_mask(tiny_llama, tiny_qwen2, monkeypatch):
    """The right-padded embedding and the plain causal QL pass reach SDPA with is_causal and no mask tensor
    (given no 2D mask, transformers builds an [L, L] one through vmap: slower, and off FlashAttention)."""
    from llmql.train.modeling import QLModel

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    layers = 0
    for path in (tiny_llama, tiny_qwen2):
        lm, tok = _load(path)
        layers += 2 * lm.config.num_hidden_layers  # one attention call a layer in each of the two forwards
        ids, mask = map(torch.from_numpy, pad(tok.passages(TITLES, PASSAGES), tok.config.pad_token_id, "right"))
        batch = _ql_batch(tok, "query")
        with torch.no_grad():
            BiEncoder(lm, right_padded=True)(ids, mask)
            QLModel(lm, attention_stop=False, right_padded=True)(
                batch["input_ids"], batch["attention_mask"], batch["end_positions"], batch["target_mask"]
            )
    assert len(calls) == layers
    assert all(attn_mask is None and is_causal for attn_mask, is_causal in calls)


def test_stage1_under_gradient_checkpointing_keeps_attention_stop(tiny_llama):
    """Checkpointing drops the layers' caches that the two-pass route reads: the dense mask is used instead."""
    from llmql.train.modeling import QLModel

    lm, tok = _load(tiny_llama)
    batch = _ql_batch(tok, "query")
    args = (batch["input_ids"], batch["attention_mask"], batch["end_positions"], batch["target_mask"])
    with torch.no_grad():
        reference = QLModel(lm, True)(*args)
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.config.use_cache = False
    model = QLModel(
        lm, True, right_padded=True, route="two-pass"
    ).train()  # no dropout in the tiny model: train() changes nothing else
    out = model(*args)
    targets = batch["target_mask"].bool()
    torch.testing.assert_close(out[targets].detach(), reference[targets], atol=1e-5, rtol=0)
