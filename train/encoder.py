"""`Encoder`: the trained retriever as a library object (PyTorch). `llmql.export.OnnxEncoder` mirrors it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from llmql.train.core.device import autocast, device_weights, resolve_bf16, to_device, to_host_later
from llmql.train.core.text_encoder import TextEncoderBase
from llmql.train.core.tokenization import PromptTokenizer
from llmql.train.modeling import BiEncoder, load_for_inference


class Encoder(TextEncoderBase):
    """Queries and passages -> L2-normalised float32 embeddings (last-token pooling, the paper's prompts), on any
    device (see `llmql.train.core.device`); embeddings come back as float32 numpy on the host.

    On a GPU with bf16 the weights themselves are bf16 (measured faster than fp32 weights under autocast); on a
    CPU with native bf16 they stay fp32 under bf16 autocast."""

    def __init__(
        self,
        model: BiEncoder,
        tokenizer: PromptTokenizer,
        bf16: bool = False,
        identity: str = "",
        device: str = "cpu",
        directory: str | None = None,
    ):
        self.device = device
        self.model, self.bf16 = device_weights(model.eval(), bf16, device)
        self.identity, self.directory = identity, directory
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        bf16: bool | str = "auto",
        adapter: bool = True,
        device: str = "cpu",
        identity: str = "",
        directory: str | None = None,
    ) -> Encoder:
        """`identity`: the trained model's (`llmql.export.runtime.load_encoder` passes it); `directory`: where
        its search.json is (the export it was loaded for, else `path`)."""
        lm, hf_tokenizer, config = load_for_inference(path, adapter=adapter)
        return cls(
            BiEncoder(lm, normalize=config.normalize),
            PromptTokenizer(hf_tokenizer.backend_tokenizer, config),
            resolve_bf16(bf16, device),
            identity=identity,
            device=device,
            directory=directory or str(path),
        )

    def _inputs(self, ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, bool]:
        right = bool((mask[:, :-1] >= mask[:, 1:]).all())  # right-padded rows run on the causal kernel, no mask
        return to_device(ids, self.device), to_device(mask, self.device), right

    @torch.inference_mode()
    def _launch(self, inputs: tuple[torch.Tensor, torch.Tensor, bool]) -> Callable[[], np.ndarray]:
        ids, mask, right = inputs
        with autocast(self.bf16, self.device):
            return to_host_later(self.model(ids, mask, right_padded=right).float())

    def _embed(self, ids: torch.Tensor, mask: torch.Tensor, right: bool = False) -> np.ndarray:
        return self._launch((ids, mask, right))()
