"""The two training objectives as small pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [N, V], targets [N] -> [N] log P(target), computed in fp32 for a stable log-softmax."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def ql_loss(token_logprobs: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the target tokens.

    token_logprobs [B, L]: log P of each target token (0 elsewhere); target_mask [B, L]: 1 on targets.
    The first column is never a target (nothing predicts it).
    """
    targets = target_mask[:, 1:].sum().clamp(min=1)
    return -(token_logprobs[:, 1:] * target_mask[:, 1:]).sum() / targets


def info_nce(
    queries: torch.Tensor, passages: torch.Tensor, group_size: int, temperature: float, offset: int = 0
) -> torch.Tensor:
    """InfoNCE over in-batch and hard negatives.

    queries  [Q, H] and passages [P, H], both L2-normalised; passages come in groups of `group_size`
    (positive first, then its negatives). Query k's positive sits at row offset + k * group_size: `offset`
    is where this process's passages start once passages from all processes are gathered.
    """
    scores = queries @ passages.T / temperature  # [Q, P]
    targets = offset + torch.arange(queries.shape[0], device=queries.device) * group_size
    return F.cross_entropy(scores.float(), targets)
