"""What every encoder shares, whatever runs the model: prompts, length-sorted batches, padding, output order.

Torch-free; `llmql.train.encoder.Encoder` (PyTorch) and `llmql.export.runtime.OnnxEncoder` (ONNX Runtime) only
say how one padded batch becomes embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmql.train.batching import length_batches, pad, prefetched
from llmql.train.config import ModelConfig
from llmql.train.tokenization import PromptTokenizer


class TextEncoderBase:
    tokenizer: PromptTokenizer
    identity: str = ""  # the trained model the vectors come from (indexes record it)
    directory: str | None = None  # the export or model directory it was loaded from (its search.json applies)

    def _embed(self, ids, mask) -> np.ndarray:
        """input_ids, attention_mask [B, L] (as `_inputs` made them) -> [B, H] float32, L2-normalised."""
        raise NotImplementedError

    def _inputs(self, ids: np.ndarray, mask: np.ndarray):
        """Padded numpy batch -> what `_embed` takes; runs on the prefetch thread (a GPU runtime copies here)."""
        return ids, mask

    @property
    def config(self) -> ModelConfig:
        return self.tokenizer.config

    @property
    def dim(self) -> int:
        return self.config.embedding_dim

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return self.encode_ids(self.tokenizer.queries(texts), batch_size, progress)

    def encode_passages(
        self,
        texts: Sequence[str],
        titles: Sequence[str] | None = None,
        batch_size: int = 16,
        progress: bool = False,
        max_tokens: int | None = None,
    ) -> np.ndarray:
        titles = titles if titles is not None else [""] * len(texts)
        return self.encode_ids(self.tokenizer.passages(titles, texts), batch_size, progress, max_tokens=max_tokens)

    def encode_ids(
        self,
        rows: list[list[int]],
        batch_size: int = 16,
        progress: bool = False,
        side: str = "right",
        max_tokens: int | None = None,
    ) -> np.ndarray:
        """Token rows (each ending in [E]) -> [N, H] float32 in input order, batched by length to limit padding
        (at most `batch_size` rows and, with `max_tokens`, that many padded tokens a batch)."""
        from tqdm.auto import tqdm

        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        batches = list(length_batches([len(r) for r in rows], batch_size, max_tokens))

        def prepare(index: list[int]):
            return self._inputs(*pad([rows[i] for i in index], self.config.pad_token_id, side))

        bar = tqdm(total=len(batches), desc="encode", unit="batch", disable=not progress)
        for index, inputs in prefetched(batches, prepare):
            out[index] = self._embed(*inputs)
            bar.update()
        bar.close()
        return out
