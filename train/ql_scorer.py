"""`QLScorer`: log P(query | passage) from the stage-1 model under the Attention Stop layout (PyTorch).

Two paths giving the same numbers: `score` runs passage and query in one forward pass; `end_states` +
`score_states` first keep only [E]'s states per passage (computable at indexing time) and then run just the
query tokens against them. `llmql.export.OnnxQLScorer` is the ONNX twin of the second path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from llmql.train.batching import length_batches, pad
from llmql.train.device import autocast, resolve_bf16, to_device
from llmql.train.end_states import EndStateArrays
from llmql.train.modeling import EndStates, QLModel, compute_end_states, load_for_inference, query_logprobs_from_states
from llmql.train.ql_base import QLScorerBase
from llmql.train.tokenization import PromptTokenizer


class QLScorer(QLScorerBase):
    """The PyTorch QL scorer on any device (see `llmql.train.device`); states cross as float32 numpy."""

    def __init__(self, lm: torch.nn.Module, tokenizer: PromptTokenizer, bf16: bool = False, device: str = "cpu"):
        self.device = device
        self.lm = lm.eval().to(device)
        self.tokenizer = tokenizer
        self.bf16 = bf16

    @classmethod
    def from_pretrained(cls, path: str | Path, bf16: bool | str = "auto", device: str = "cpu") -> QLScorer:
        """Loads the base (stage-1) weights; a contrastive adapter in the same directory stays off."""
        lm, hf_tokenizer, config = load_for_inference(path, adapter=False)
        tokenizer = PromptTokenizer(hf_tokenizer.backend_tokenizer, config)
        return cls(lm, tokenizer, resolve_bf16(bf16, device), device)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return to_device(array, self.device)

    @torch.inference_mode()
    def score(
        self, query: str, passages: Sequence[str], titles: Sequence[str] | None = None, batch_size: int = 8
    ) -> np.ndarray:
        """Full forward pass (the reference the cached path is checked against): [N] log P(q | d) summed over the
        query tokens and the closing EOS."""
        titles = titles if titles is not None else [""] * len(passages)
        docs = self.tokenizer.passages(titles, passages)
        q = self.tokenizer.ql_queries([query])[0]
        model = QLModel(self.lm, attention_stop=True)
        out = np.zeros(len(docs), dtype=np.float64)
        for index in length_batches([len(d) for d in docs], batch_size):
            ids, mask = pad([docs[i] + q for i in index], self.config.pad_token_id)
            ends = torch.tensor([len(docs[i]) - 1 for i in index], device=self.device)
            target = mask.copy()
            for r, i in enumerate(index):
                target[r, : len(docs[i])] = 0
            with autocast(self.bf16, self.device):
                logprobs = model(self._tensor(ids), self._tensor(mask), ends, self._tensor(target))
            out[index] = logprobs.double().sum(dim=1).cpu().numpy()
        return out

    @torch.inference_mode()
    def _document_states(self, ids: np.ndarray, mask: np.ndarray) -> EndStateArrays:
        with autocast(self.bf16, self.device):
            s = compute_end_states(self.lm, self._tensor(ids), self._tensor(mask))
        keys, values, hidden = (t.float().cpu().numpy() for t in (s.keys, s.values, s.hidden))
        return EndStateArrays(keys, values, hidden, s.positions.cpu().numpy())

    @torch.inference_mode()
    def _query_logprobs(self, query: np.ndarray, states: EndStateArrays) -> np.ndarray:
        tensors = EndStates(*(self._tensor(a) for a in (states.keys, states.values, states.hidden, states.positions)))
        with autocast(self.bf16, self.device):
            logprobs = query_logprobs_from_states(self.lm, self._tensor(query), tensors)
        return logprobs.double().cpu().numpy()
