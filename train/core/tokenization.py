"""Prompt-aware tokenisation shared by training, the ONNX runtime and sync.

Only `tokenizers` is needed here (no torch, no transformers), so `llmql.export`'s runtime can reuse it. The body
(passage `title text` or query) is truncated to its token budget first; then the whole prompt is tokenised in one
piece so merges at the template boundaries are the tokenizer's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from llmql.train.core.chunking import Chunking, text_span, token_windows
from llmql.train.core.config import ModelConfig, load_llmql_config
from llmql.train.core.prompts import corrupt_words, passage_body, split_template

TOKENIZER_FILE = "tokenizer.json"
CHARS_PER_TOKEN = 6  # a first prefix this many characters a token: English BPE averages about 4-5
CUT_MARGIN = 16  # tokens a prefix must hold past the cut, so that the cut is the whole text's


def precut(text: str, chars: int) -> str:
    """The first `chars` characters of `text`, ended before a whitespace where there is one (a word is not
    split), or all of it when it is that short."""
    if len(text) <= chars:
        return text
    space = max(text.rfind(" ", 0, chars), text.rfind("\n", 0, chars))
    return text[: space if space > 0 else chars]


@dataclass(frozen=True)
class Corruption:
    """Input Corruption settings for one call; `prob == 0` disables it."""

    prob: float = 0.0
    level: str = "word"  # "word" (paper) or "token"


class PromptTokenizer:
    """Turns passages and queries into the exact id sequences every llmql stage uses."""

    def __init__(self, tokenizer: Tokenizer, config: ModelConfig):
        self.tokenizer = tokenizer
        self.config = config
        self._passage_prefix, self._passage_suffix = split_template(config.prompts.passage)
        self._query_prefix, self._query_suffix = split_template(config.prompts.query)

    @classmethod
    def from_dir(cls, directory: str | Path) -> PromptTokenizer:
        directory = Path(directory)
        config, _ = load_llmql_config(directory)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; llmql directories carry the tokenizer as tokenizer.json")
        return cls(Tokenizer.from_file(str(path)), config)

    # -- pieces ------------------------------------------------------------------------------------------------
    def _truncate(self, bodies: Sequence[str], max_tokens: int) -> list[str]:
        """Cut each body after its `max_tokens`-th token, at the character offset the tokenizer reports.

        Only a prefix of each body is tokenised (`precut`): a long document costs about its kept tokens. The cut
        is the one the whole text gives, because a prefix is used only when it holds `CUT_MARGIN` tokens past the
        cut (tokens that far before a prefix's end are the whole text's); a prefix holding fewer is tried again
        four times longer, up to the whole body."""
        bodies = list(bodies)
        out = list(bodies)
        todo = list(range(len(bodies)))
        chars = CHARS_PER_TOKEN * (max_tokens + CUT_MARGIN)
        while todo:
            pieces = [precut(bodies[i], chars) for i in todo]
            encodings = self.tokenizer.encode_batch(pieces, add_special_tokens=False)
            again = []
            for i, piece, enc in zip(todo, pieces, encodings, strict=True):
                whole = len(piece) == len(bodies[i])
                if len(enc.ids) > max_tokens and (whole or len(enc.ids) >= max_tokens + CUT_MARGIN):
                    out[i] = bodies[i][: enc.offsets[max_tokens - 1][1]]
                elif not whole:
                    again.append(i)  # the prefix was too short to place the cut: a longer one
            todo, chars = again, chars * 4
        return out

    def _wrap(self, prefix: str, bodies: Sequence[str], suffix: str) -> list[Encoding]:
        # Whitespace at the end of the prefix belongs to the body's first word (BPE merges "Ġword").
        stripped = prefix.rstrip()
        gap = prefix[len(stripped) :]
        texts = [stripped + gap + b + suffix for b in bodies]
        return self.tokenizer.encode_batch(texts, add_special_tokens=False)

    def _finish(self, ids: Sequence[int]) -> list[int]:
        head = [self.config.bos_token_id] if self.config.bos_token_id is not None else []
        return [*head, *ids, self.config.end_token_id]

    # -- public ------------------------------------------------------------------------------------------------
    def passages(
        self,
        titles: Sequence[str],
        texts: Sequence[str],
        corruption: Corruption | None = None,
        rng: np.random.Generator | None = None,
    ) -> list[list[int]]:
        """`<bos> passage prompt [E]` for each passage; optionally with Input Corruption of the body only."""
        return self.passages_counting_cuts(titles, texts, corruption, rng)[0]

    def passages_counting_cuts(
        self,
        titles: Sequence[str],
        texts: Sequence[str],
        corruption: Corruption | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[list[list[int]], int]:
        """`passages`, and how many were longer than `max_passage_tokens` and so lost their tail (one
        tokenisation for both: a sync reports the count)."""
        whole = [passage_body(t, x) for t, x in zip(titles, texts, strict=True)]
        bodies = self._truncate(whole, self.config.max_passage_tokens)
        cut = sum(len(b) < len(w) for b, w in zip(bodies, whole, strict=True))
        corruption = corruption or Corruption()
        if corruption.prob > 0 and rng is None:
            raise ValueError("Input Corruption needs a random generator")
        if corruption.prob > 0 and corruption.level == "word":
            bodies = [corrupt_words(b, corruption.prob, rng) for b in bodies]
        encodings = self._wrap(self._passage_prefix, bodies, self._passage_suffix)
        ids = [list(e.ids) for e in encodings]
        if corruption.prob > 0 and corruption.level == "token":
            start = len(self._passage_prefix)
            for row, enc, body in zip(ids, encodings, bodies, strict=True):
                in_body = [i for i, (a, b) in enumerate(enc.offsets) if a >= start and b <= start + len(body)]
                drop = rng.random(len(in_body)) < corruption.prob
                for i, d in zip(in_body, drop, strict=True):
                    if d:
                        row[i] = self.mask_token_id
        return [self._finish(row) for row in ids], cut

    def chunk_spans(
        self, titles: Sequence[str], texts: Sequence[str], chunking: Chunking
    ) -> list[list[tuple[int, int]]]:
        """Each document's passages as [start, end) character spans of its text: windows of `chunking.tokens`
        tokens over the body as the model reads it (title, then text), cut at the tokenizer's own token offsets.
        A document that fits is one span, and its passage is exactly the one an unchunked sync encodes."""
        bodies = [passage_body(t, x) for t, x in zip(titles, texts, strict=True)]
        encodings = self.tokenizer.encode_batch(bodies, add_special_tokens=False)
        out = []
        for title, text, enc in zip(titles, texts, encodings, strict=True):
            windows = token_windows(len(enc.ids), chunking.tokens, chunking.overlap) if enc.ids else []
            spans = [text_span((enc.offsets[a][0], enc.offsets[b - 1][1]), title, text) for a, b in windows if b > a]
            out.append(spans or [(0, len(text))])
        return out

    def queries(self, queries: Sequence[str]) -> list[list[int]]:
        """`<bos> query prompt [E]`: the stage-2 query side."""
        bodies = self._truncate([q.strip() for q in queries], self.config.max_query_tokens)
        return [self._finish(e.ids) for e in self._wrap(self._query_prefix, bodies, self._query_suffix)]

    def ql_queries(self, queries: Sequence[str]) -> list[list[int]]:
        """The query as it follows [E] in stage 1: its tokens, then EOS. Scored as log P(q | d)."""
        encodings = self.tokenizer.encode_batch([q.strip() for q in queries], add_special_tokens=False)
        return [[*e.ids[: self.config.max_query_tokens], self.config.end_token_id] for e in encodings]

    @property
    def mask_token_id(self) -> int:
        if self.config.mask_token_id is None:
            raise ValueError("token-level corruption needs mask_token_id in the model config")
        return self.config.mask_token_id
