"""`Encoder`: the trained retriever as a library object (PyTorch). `llmql.export.OnnxEncoder` mirrors it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llmql.train.device import autocast, resolve_bf16, to_device
from llmql.train.modeling import BiEncoder, load_for_inference
from llmql.train.text_encoder import TextEncoderBase
from llmql.train.tokenization import PromptTokenizer


class Encoder(TextEncoderBase):
    """Queries and passages -> L2-normalised float32 embeddings (last-token pooling, the paper's prompts), on any
    device (see `llmql.train.device`); embeddings come back as float32 numpy on the host."""

    def __init__(
        self, model: BiEncoder, tokenizer: PromptTokenizer, bf16: bool = False, identity: str = "", device: str = "cpu"
    ):
        self.device = device
        self.model = model.eval().to(device)
        self.identity = identity
        self.tokenizer = tokenizer
        self.bf16 = bf16

    @classmethod
    def from_pretrained(
        cls, path: str | Path, bf16: bool | str = "auto", adapter: bool = True, device: str = "cpu"
    ) -> Encoder:
        lm, hf_tokenizer, config = load_for_inference(path, adapter=adapter)
        return cls(
            BiEncoder(lm, normalize=config.normalize),
            PromptTokenizer(hf_tokenizer.backend_tokenizer, config),
            resolve_bf16(bf16, device),
            device=device,
        )

    def _inputs(self, ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return to_device(ids, self.device), to_device(mask, self.device)

    @torch.inference_mode()
    def _embed(self, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        with autocast(self.bf16, self.device):
            return self.model(ids, mask).float().cpu().numpy()
