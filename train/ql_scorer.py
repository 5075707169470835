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
from llmql.train.config import ModelConfig
from llmql.train.device import autocast, resolve_bf16
from llmql.train.end_states import EndStateArrays
from llmql.train.modeling import EndStates, QLModel, compute_end_states, load_for_inference, query_logprobs_from_states
from llmql.train.tokenization import PromptTokenizer


class QLScorer:
    identity: str = ""  # the model the scores come from (an index's cached [E] states must match it)

    def __init__(self, lm: torch.nn.Module, tokenizer: PromptTokenizer, bf16: bool = False):
        self.lm = lm.eval()
        self.tokenizer = tokenizer
        self.bf16 = bf16

    @classmethod
    def from_pretrained(cls, path: str | Path, bf16: bool | str = "auto") -> QLScorer:
        """Loads the base (stage-1) weights; a contrastive adapter in the same directory stays off."""
        lm, hf_tokenizer, config = load_for_inference(path, adapter=False)
        return cls(lm, PromptTokenizer(hf_tokenizer.backend_tokenizer, config), resolve_bf16(bf16))

    @property
    def config(self) -> ModelConfig:
        return self.tokenizer.config

    @torch.inference_mode()
    def score(
        self, query: str, passages: Sequence[str], titles: Sequence[str] | None = None, batch_size: int = 8
    ) -> np.ndarray:
        """Full forward pass: [N] log P(q | d) summed over the query tokens and the closing EOS."""
        titles = titles if titles is not None else [""] * len(passages)
        docs = self.tokenizer.passages(titles, passages)
        q = self.tokenizer.ql_queries([query])[0]
        model = QLModel(self.lm, attention_stop=True)
        out = np.zeros(len(docs), dtype=np.float64)
        for index in length_batches([len(d) for d in docs], batch_size):
            rows = [docs[i] + q for i in index]
            ids, mask = pad(rows, self.config.pad_token_id)
            ends = torch.tensor([len(docs[i]) - 1 for i in index])
            target = torch.from_numpy(mask).clone()
            for r, i in enumerate(index):
                target[r, : len(docs[i])] = 0
            with autocast(self.bf16):
                logprobs = model(torch.from_numpy(ids), torch.from_numpy(mask), ends, target)
            out[index] = logprobs.double().sum(dim=1).numpy()
        return out

    @torch.inference_mode()
    def end_states(
        self, passages: Sequence[str], titles: Sequence[str] | None = None, batch_size: int = 16
    ) -> EndStateArrays:
        """Per-passage [E] states (float32 numpy, input order): what the QL cache stores."""
        titles = titles if titles is not None else [""] * len(passages)
        docs = self.tokenizer.passages(titles, passages)
        parts, order = [], []
        for index in length_batches([len(d) for d in docs], batch_size):
            ids, mask = pad([docs[i] for i in index], self.config.pad_token_id)
            with autocast(self.bf16):
                s = compute_end_states(self.lm, torch.from_numpy(ids), torch.from_numpy(mask))
            parts.append(
                EndStateArrays(
                    s.keys.float().numpy(), s.values.float().numpy(), s.hidden.float().numpy(), s.positions.numpy()
                )
            )
            order.extend(index)
        if not parts:
            raise ValueError("no passages")
        return EndStateArrays.concat(parts).take(np.argsort(np.asarray(order)))

    @torch.inference_mode()
    def score_states(self, query: str, states: EndStateArrays, batch_size: int = 64) -> np.ndarray:
        """Fast path: [N] log P(q | d) from cached [E] states; only the query tokens are run."""
        if not query.strip():
            raise ValueError("empty query")
        q = torch.tensor(self.tokenizer.ql_queries([query])[0])
        out = np.zeros(len(states), dtype=np.float64)
        for start in range(0, len(states), batch_size):
            part = states.take(slice(start, start + batch_size))
            tensors = EndStates(
                *(
                    torch.from_numpy(np.ascontiguousarray(a))
                    for a in (part.keys, part.values, part.hidden, part.positions)
                )
            )
            ids = q.unsqueeze(0).expand(len(part), -1)
            with autocast(self.bf16):
                logprobs = query_logprobs_from_states(self.lm, ids, tensors)
            out[start : start + len(part)] = logprobs.double().sum(dim=1).numpy()
        return out
