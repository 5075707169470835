import torch

from llmql.train.masks import attention_stop_mask, causal_padding_mask, position_ids_from_mask


def test_attention_stop_mask_matches_hand_made_example():
    # tokens: d0 d1 [E] q0 q1 pad   ([E] at index 2)
    mask = attention_stop_mask(torch.tensor([[1, 1, 1, 1, 1, 0]]), torch.tensor([2]))[0, 0].int()
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],  # d0: causal
            [1, 1, 0, 0, 0, 0],  # d1: causal
            [1, 1, 1, 0, 0, 0],  # [E]: sees the whole document
            [0, 0, 1, 1, 0, 0],  # q0: [E] and itself, no document token
            [0, 0, 1, 1, 1, 0],  # q1: [E], q0, itself
            [0, 0, 0, 0, 0, 1],  # padding row: itself only (no fully masked row), never seen by others
        ]
    )
    assert torch.equal(mask, expected)


def test_each_example_uses_its_own_end_position_and_left_padding_has_no_empty_rows():
    attention = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    mask = attention_stop_mask(attention, torch.tensor([3, 1]))[:, 0]
    assert mask.any(dim=-1).all()  # no row without a key: SDPA would give NaN
    assert mask[0, 4].nonzero().flatten().tolist() == [3, 4]  # first example: q sees [E]=3 and itself
    assert mask[1, 4].nonzero().flatten().tolist() == [1, 2, 3, 4]  # second: [E]=1 onwards
    assert not mask[0, :, :2].any(dim=0)[2:].any()  # left padding is never attended by real tokens


def test_causal_padding_mask_is_plain_causal():
    mask = causal_padding_mask(torch.tensor([[1, 1, 1, 0]]))[0, 0]
    assert torch.equal(mask[:3, :3], torch.tril(torch.ones(3, 3, dtype=torch.bool)))
    assert not mask[:3, 3].any()


def test_position_ids_skip_left_padding():
    assert position_ids_from_mask(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])).tolist() == [[0, 0, 0, 1], [0, 1, 2, 2]]
