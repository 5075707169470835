"""What every encoder shares, whatever runs the model: prompts, length-sorted batches, padding, output order.

Torch-free; `llmql.train.encoder.Encoder` (PyTorch) and `llmql.export.runtime.OnnxEncoder` (ONNX Runtime) only
say how one padded batch becomes embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from llmql.train.core.batching import length_batches, pad, prefetched, run_batches
from llmql.train.core.config import ModelConfig
from llmql.train.core.end_states import EndStates
from llmql.train.core.ql_base import QLScorerBase
from llmql.train.core.tokenization import PromptTokenizer


@runtime_checkable
class TextEncoder(Protocol):
    """What search, the model queue and the service need of an encoder, whatever runs it (PyTorch, ONNX Runtime,
    or a queue in front of either)."""

    identity: str  # the trained model the vectors come from (indexes record it)
    directory: str | None  # where it was loaded from (its search.json applies)
    tokenizer: PromptTokenizer

    @property
    def dim(self) -> int: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str], titles: Sequence[str] | None = None) -> np.ndarray: ...


PASSAGE_BLOCK = 1024  # passages tokenised at a time by encode_passages (length-sorted within a block)


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

    def _launch(self, inputs) -> Callable[[], np.ndarray]:
        """Start `_embed` on one prepared batch; the call returned gives its result. A GPU runtime returns before
        the device is done, so that the next batch is queued before this one is read back."""
        result = self._embed(*inputs)
        return lambda: result

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
        max_padded_tokens: int | None = None,
    ) -> np.ndarray:
        """[N, H] embeddings of passages (`titles` optional), in input order. Tokenised a block at a time, each
        block on a background thread while the model encodes the one before."""
        from tqdm.auto import tqdm

        titles = titles if titles is not None else [""] * len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        blocks = [range(i, min(i + PASSAGE_BLOCK, len(texts))) for i in range(0, len(texts), PASSAGE_BLOCK)]

        def tokenize(block: range) -> list[list[int]]:
            return self.tokenizer.passages([titles[i] for i in block], [texts[i] for i in block])

        work = prefetched(blocks, tokenize) if len(blocks) > 1 else ((b, tokenize(b)) for b in blocks)
        for block, rows in tqdm(work, total=len(blocks), desc="encode", unit="block", disable=not progress):
            out[block.start : block.stop] = self.encode_ids(rows, batch_size, max_padded_tokens=max_padded_tokens)
        return out

    def encode_ids(
        self,
        rows: list[list[int]],
        batch_size: int = 16,
        progress: bool = False,
        side: str = "right",
        max_padded_tokens: int | None = None,
    ) -> np.ndarray:
        """Token rows (each ending in [E]) -> [N, H] float32 in input order, batched by length to limit padding
        (at most `batch_size` rows and, with `max_padded_tokens`, that many padded tokens a batch)."""
        from tqdm.auto import tqdm

        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        batches = list(length_batches([len(r) for r in rows], batch_size, max_padded_tokens))

        def prepare(index: list[int]):
            return self._inputs(*pad([rows[i] for i in index], self.config.pad_token_id, side))

        bar = tqdm(total=len(batches), desc="encode", unit="batch", disable=not progress)
        for index, vectors in run_batches(batches, prepare, self._launch):
            out[index] = vectors
            bar.update()
        bar.close()
        return out


def encode_documents(
    encoder: TextEncoderBase,
    ql: QLScorerBase | None,
    rows: list[list[int]],
    batch_size: int = 16,
    max_padded_tokens: int | None = None,
) -> tuple[np.ndarray, EndStates | None]:
    """Vectors and, with a QL scorer, [E] states of passages tokenised once (`PromptTokenizer.passages`): each
    length batch is padded once and both models run on it (the retriever, then the stage-1 base), so a sync
    with a QL cache tokenises and pads nothing twice. Input order."""
    if ql is None:
        return encoder.encode_ids(rows, batch_size, max_padded_tokens=max_padded_tokens), None
    if (ql.config.prompts, ql.config.pad_token_id) != (encoder.config.prompts, encoder.config.pad_token_id):
        raise ValueError("the QL scorer and the encoder read passages differently (prompts or padding)")
    vectors = np.zeros((len(rows), encoder.dim), dtype=np.float32)
    parts, order = [], []
    if not rows:
        return vectors, None

    def prepare(index: list[int]):
        ids, mask = pad([rows[i] for i in index], encoder.config.pad_token_id)
        return encoder._inputs(ids, mask), ql._inputs(ids, mask)

    def launch(inputs) -> Callable[[], tuple[np.ndarray, EndStates]]:
        vector, states = encoder._launch(inputs[0]), ql._launch_states(inputs[1])
        return lambda: (vector(), states())

    batches = length_batches([len(r) for r in rows], batch_size, max_padded_tokens)
    for index, (batch_vectors, states) in run_batches(batches, prepare, launch):
        vectors[index] = batch_vectors
        parts.append(states)
        order.extend(index)
    return vectors, EndStates.concat(parts).take(np.argsort(np.asarray(order)))
