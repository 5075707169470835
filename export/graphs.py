"""The three computations llmql exports, as small modules around the shared PyTorch functions in
`llmql.train.modeling`, so every graph computes exactly what training and the torch runtime compute."""

from __future__ import annotations

import torch
from torch import nn

from llmql.train.modeling import BiEncoder, EndStateTensors, compute_end_states, query_logprobs_from_states


class EmbeddingGraph(nn.Module):
    """input_ids, attention_mask [B, L] -> embedding [B, H]: last-token pooling and L2 norm inside the graph."""

    def __init__(self, lm: nn.Module, normalize: bool = True):
        super().__init__()
        self.encoder = BiEncoder(lm, normalize)
        self.config = lm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": self.encoder(input_ids, attention_mask)}


class QLDocumentGraph(nn.Module):
    """Passage prompt ending in [E] -> what a query needs of it under Attention Stop (computed at indexing)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.config = lm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        states = compute_end_states(self.lm, input_ids, attention_mask)
        return {
            "end_keys": states.keys,
            "end_values": states.values,
            "end_hidden": states.hidden,
            "end_position": states.positions,
        }


class QLQueryGraph(nn.Module):
    """Decoder-with-past over the query tokens, the past being one cached [E] position per candidate.

    input_ids [B, T]: query tokens then EOS (the same row for every candidate) -> token_logprobs [B, T].
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.config = lm.config

    def forward(
        self,
        input_ids: torch.Tensor,
        end_keys: torch.Tensor,
        end_values: torch.Tensor,
        end_hidden: torch.Tensor,
        end_position: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        states = EndStateTensors(end_keys, end_values, end_hidden, end_position)
        return {"token_logprobs": query_logprobs_from_states(self.lm, input_ids, states)}
