"""`QLScorer`: log P(query | passage) from the stage-1 model under the Attention Stop layout (PyTorch).

Two paths giving the same numbers: `score` runs passage and query in one forward pass; `end_states` +
`score_states` first keep only [E]'s states per passage (computable at indexing time) and then run just the
query tokens against them. `llmql.export.OnnxQLScorer` is the ONNX twin of the second path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from llmql.train.core.batching import length_batches, pad
from llmql.train.core.device import autocast, device_weights, resolve_bf16, to_device, to_host_later
from llmql.train.core.end_states import EndStates
from llmql.train.core.ql_base import QLScorerBase, candidates_per_call
from llmql.train.core.tokenization import PromptTokenizer
from llmql.train.modeling import (
    EndStateTensors,
    QLModel,
    compute_end_states,
    load_for_inference,
    query_logprobs_from_states,
)


class QLScorer(QLScorerBase):
    """The PyTorch QL scorer on any device (see `llmql.train.core.device`). States leave the device as float16 when
    the model runs in bf16 (the QL cache stores fp16 anyway), else float32; a query's candidates are copied to
    the device in one transfer and scored in as few calls as the logits bound allows (`candidates_per_call`),
    only the scores coming back."""

    def __init__(
        self,
        lm: torch.nn.Module,
        tokenizer: PromptTokenizer,
        bf16: bool = False,
        device: str = "cpu",
        identity: str = "",
        attention_stop: bool = True,
    ):
        self.device, self.identity = device, identity
        self.lm, self.bf16 = device_weights(lm.eval(), bf16, device)
        self.reduced = bf16  # states computed in bf16 leave the device as float16
        self.tokenizer = tokenizer
        # the full path's layout: Attention Stop (the trained model's), or off (a model never trained with it
        # reads the document with ordinary attention: the zero-shot QL baseline)
        self.attention_stop = attention_stop

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        bf16: bool | str = "auto",
        device: str = "cpu",
        identity: str = "",
        attention_stop: bool = True,
    ) -> QLScorer:
        """Loads the base (stage-1) weights; a contrastive adapter in the same directory stays off."""
        lm, hf_tokenizer, config = load_for_inference(path, adapter=False)
        tokenizer = PromptTokenizer(hf_tokenizer.backend_tokenizer, config)
        return cls(lm, tokenizer, resolve_bf16(bf16, device), device, identity, attention_stop)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return to_device(array, self.device)

    def _inputs(self, ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self._tensor(ids), self._tensor(mask)

    @torch.inference_mode()
    def score(
        self, query: str, passages: Sequence[str], titles: Sequence[str] | None = None, batch_size: int = 8
    ) -> np.ndarray:
        """Full forward pass (the reference the cached path is checked against): [N] log P(q | d) summed over the
        query tokens and the closing EOS."""
        titles = titles if titles is not None else [""] * len(passages)
        docs = self.tokenizer.passages(titles, passages)
        q = self.tokenizer.ql_queries([query])[0]
        model = QLModel(self.lm, attention_stop=self.attention_stop)
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
    def _launch_states(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> Callable[[], EndStates]:
        with autocast(self.bf16, self.device):
            s = compute_end_states(self.lm, *inputs)
        dtype = torch.float16 if self.reduced else torch.float32
        parts = [to_host_later(t.to(dtype)) for t in (s.keys, s.values, s.hidden)] + [to_host_later(s.positions)]
        return lambda: EndStates(*(collect() for collect in parts))

    def _document_states(self, ids: np.ndarray, mask: np.ndarray) -> EndStates:
        return self._launch_states(self._inputs(ids, mask))()

    @property
    def vocab_size(self) -> int:
        return int(self.lm.config.get_text_config().vocab_size)

    @torch.inference_mode()
    def _score_query(self, q: np.ndarray, states: EndStates, batch_size: int | None) -> np.ndarray:
        dtype = next(self.lm.parameters()).dtype
        on_device = EndStateTensors(
            *(self._tensor(a).to(dtype) for a in (states.keys, states.values, states.hidden)),
            self._tensor(states.positions),
        )
        query = self._tensor(q)
        total = []
        step = candidates_per_call(len(q), self.vocab_size, batch_size)
        for start in range(0, len(states), step):
            part = EndStateTensors(*(t[start : start + step] for t in vars(on_device).values()))
            with autocast(self.bf16, self.device):
                logprobs = query_logprobs_from_states(self.lm, query.expand(len(part.positions), -1), part)
            total.append(logprobs.double().sum(dim=1))
        return torch.cat(total).cpu().numpy()
