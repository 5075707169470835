"""`Encoder`: the trained retriever as a library object (PyTorch). `llmql.export.OnnxEncoder` mirrors it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from llmql.train.batching import length_batches, pad
from llmql.train.config import ModelConfig
from llmql.train.device import autocast, resolve_bf16
from llmql.train.modeling import BiEncoder, load_for_inference
from llmql.train.tokenization import PromptTokenizer


class Encoder:
    """Queries and passages -> L2-normalised float32 embeddings (last-token pooling, the paper's prompts)."""

    def __init__(self, model: BiEncoder, tokenizer: PromptTokenizer, bf16: bool = False, identity: str = ""):
        self.model = model.eval()
        self.identity = identity
        self.tokenizer = tokenizer
        self.bf16 = bf16

    @classmethod
    def from_pretrained(cls, path: str | Path, bf16: bool | str = "auto", adapter: bool = True) -> Encoder:
        lm, hf_tokenizer, config = load_for_inference(path, adapter=adapter)
        return cls(
            BiEncoder(lm, normalize=config.normalize),
            PromptTokenizer(hf_tokenizer.backend_tokenizer, config),
            resolve_bf16(bf16),
        )

    @property
    def config(self) -> ModelConfig:
        return self.tokenizer.config

    @property
    def dim(self) -> int:
        return self.config.embedding_dim

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return self.encode_ids(self.tokenizer.queries(texts), batch_size, progress)

    def encode_passages(
        self, texts: Sequence[str], titles: Sequence[str] | None = None, batch_size: int = 16, progress: bool = False
    ) -> np.ndarray:
        titles = titles if titles is not None else [""] * len(texts)
        return self.encode_ids(self.tokenizer.passages(titles, texts), batch_size, progress)

    @torch.inference_mode()
    def encode_ids(self, rows: list[list[int]], batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """Token rows (each ending in [E]) -> [N, H] float32, batched by length to limit padding."""
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        batches = list(length_batches([len(r) for r in rows], batch_size))
        for index in tqdm(batches, desc="encode", unit="batch", disable=not progress):
            ids, mask = pad([rows[i] for i in index], self.config.pad_token_id)
            with autocast(self.bf16):
                emb = self.model(torch.from_numpy(ids), torch.from_numpy(mask))
            out[index] = emb.float().numpy()
        return out
