import math

import pytest
import torch

from llmql.train.losses import info_nce, ql_loss, target_logprobs
from llmql.train.pooling import last_token_index, last_token_pool


def test_info_nce_on_hand_made_vectors():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # groups of 2: query 0 -> rows 0 (pos), 1 (neg); query 1 -> rows 2 (pos), 3 (neg)
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    # query 0 scores [1, 0, 0, 1]/t, target 0; query 1 scores [0, 1, 1, 0]/t, target 2
    t = 0.5
    expected = -math.log(math.exp(2) / (2 * math.exp(2) + 2))
    assert info_nce(q, p, group_size=2, temperature=t).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_offset_points_at_this_process_rows():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # another process's passage first, ours second
    assert info_nce(q, p, 1, 1.0, offset=1).item() < info_nce(q, p, 1, 1.0, offset=0).item()


def test_ql_loss_averages_only_target_tokens():
    logprobs = torch.tensor([[0.0, -1.0, -2.0, -3.0], [0.0, -4.0, 0.0, 0.0]])
    target = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]])  # first column is never a target
    assert ql_loss(logprobs, target).item() == pytest.approx((2 + 3 + 4) / 3)


def test_target_logprobs_is_log_softmax_gather():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert target_logprobs(logits, torch.tensor([1])).item() == pytest.approx(math.log(0.75))


def test_last_token_pool_is_padding_side_independent():
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).view(2, 4, 2)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [1, 3]
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_index(left).tolist() == [3, 3]
    pooled = last_token_pool(hidden, right, normalize=False)
    assert torch.equal(pooled, torch.stack([hidden[0, 1], hidden[1, 3]]))
    assert torch.allclose(last_token_pool(hidden, right).norm(dim=-1), torch.ones(2))
