"""Prompt-aware tokenisation shared by training, the ONNX runtime and sync.

Only `tokenizers` is needed here (no torch, no transformers), so `llmql.export`'s runtime can reuse it. The whole
prompt is tokenised in one piece, so merges at the template's edges are the tokenizer's own; a body (passage
`title text` or query) over its token budget then loses its tokens past it, as transformers' truncation does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from llmql.train.core.chunking import Chunking, body_shift, text_span, token_windows
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


@dataclass(frozen=True)
class BodySpan:
    """Where a body's tokens lie in its prompt's encoding: [first, stop), and whether no token spans its edges."""

    first: int
    stop: int
    clean: bool

    @property
    def count(self) -> int:
        return self.stop - self.first

    @property
    def tokens(self) -> range:
        return range(self.first, self.stop)


def body_tokens(encoding: Encoding, start: int, end: int, length: int) -> BodySpan:
    """The tokens of the characters [start, end) of a text of `length` characters."""
    first, first_clean = _token_at(encoding, start, length)
    stop, stop_clean = _token_at(encoding, end, length) if end > start else (first, first_clean)
    return BodySpan(first, stop, first_clean and stop_clean)


def _token_at(encoding: Encoding, char: int, length: int) -> tuple[int, bool]:
    """The token holding character `char` (the token count at the text's end), and whether it starts there."""
    if char >= length:
        return len(encoding.ids), True
    token = encoding.char_to_token(char)
    if token is None:  # a character no token covers (a normaliser dropped it): no clean edge here
        return len(encoding.ids), False
    return token, encoding.token_to_chars(token)[0] == char


@dataclass(frozen=True)
class PromptRow:
    """One tokenised prompt, and how many of its body's tokens a cut drops."""

    encoding: Encoding
    body: BodySpan
    text_start: int  # the body's first character in the prompt
    dropped: int = 0

    def cut_to(self, max_tokens: int) -> PromptRow:
        return replace(self, dropped=max(0, self.body.count - max_tokens))

    def kept_ids(self) -> list[int] | None:
        """The prompt's ids without the dropped body tokens; None where a token spans the body's edge."""
        ids = self.encoding.ids  # a new list at each read
        if not self.dropped:
            return ids
        if not self.body.clean:
            return None
        return ids[: self.body.stop - self.dropped] + ids[self.body.stop :]

    def kept_span(self) -> range:
        return range(self.body.first, self.body.stop - self.dropped)

    def body_chars(self, length: int) -> int:
        """How many of the body's `length` characters its kept tokens cover."""
        if not self.dropped:
            return length
        return max(0, self.encoding.token_to_chars(self.body.stop - self.dropped - 1)[1] - self.text_start)


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
    def _prompt_texts(self, prefix: str, bodies: Sequence[str], suffix: str) -> tuple[list[str], int]:
        """The prompts, and where each body's tokens start in its prompt: whitespace at the end of the prefix
        belongs to the body's first word (BPE merges "Ġword")."""
        return [prefix + b + suffix for b in bodies], len(prefix.rstrip())

    def _prompts(self, prefix: str, bodies: Sequence[str], suffix: str) -> list[PromptRow]:
        """Each prompt tokenised whole, with where its body's tokens lie."""
        texts, start = self._prompt_texts(prefix, bodies, suffix)
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [
            PromptRow(enc, body_tokens(enc, start, len(text) - len(suffix), len(text)), len(prefix))
            for text, enc in zip(texts, encodings, strict=True)
        ]

    def _cut_prompts(self, prefix: str, bodies: Sequence[str], suffix: str, max_tokens: int) -> list[PromptRow]:
        """Each prompt tokenised once, its body's tokens past `max_tokens` marked to drop.

        Only a prefix of each body is tokenised (`precut`): a long document costs about its kept tokens. The body
        tokens kept are the whole text's, because a prefix is used only when it holds `CUT_MARGIN` tokens past the
        cut (tokens that far before a prefix's end are the whole text's); a prefix holding fewer is tried again
        four times longer, up to the whole body."""
        out: list[PromptRow] = [None] * len(bodies)  # type: ignore[list-item]
        todo = list(range(len(bodies)))
        chars = CHARS_PER_TOKEN * (max_tokens + CUT_MARGIN)
        while todo:
            pieces = [precut(bodies[i], chars) for i in todo]
            again = []
            for i, piece, row in zip(todo, pieces, self._prompts(prefix, pieces, suffix), strict=True):
                if len(piece) == len(bodies[i]) or row.body.count >= max_tokens + CUT_MARGIN:
                    out[i] = row.cut_to(max_tokens)
                else:
                    again.append(i)  # the prefix was too short to place the cut: a longer one
            todo, chars = again, chars * 4
        return out

    def _prompt_ids(
        self, prefix: str, bodies: Sequence[str], suffix: str, max_tokens: int
    ) -> tuple[list[list[int]], list[range], int]:
        """Each prompt's ids with its body cut to `max_tokens` tokens, where the body's tokens lie in them, and how
        many bodies were cut.

        A cut drops the body's tokens past its budget from the prompt's own tokenisation, as transformers'
        truncation does: one pass. Where a token spans the body's edge (a tokenizer whose pre-tokeniser does not
        split there), that body is cut as text and its prompt tokenised again."""
        rows = self._cut_prompts(prefix, bodies, suffix, max_tokens)
        ids = [row.kept_ids() for row in rows]
        spans = [row.kept_span() for row in rows]
        again = [i for i, row in enumerate(ids) if row is None]
        cut_texts = [bodies[i][: rows[i].body_chars(len(bodies[i]))] for i in again]
        for i, redone in zip(again, self._prompts(prefix, cut_texts, suffix), strict=True):
            ids[i], spans[i] = redone.encoding.ids, redone.body.tokens
        return ids, spans, sum(row.dropped > 0 for row in rows)  # type: ignore[return-value]

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
        bodies = [passage_body(t, x) for t, x in zip(titles, texts, strict=True)]
        corruption = corruption or Corruption()
        if corruption.prob > 0 and rng is None:
            raise ValueError("Input Corruption needs a random generator")
        prefix, suffix, budget = self._passage_prefix, self._passage_suffix, self.config.max_passage_tokens
        if corruption.prob > 0 and corruption.level == "word":
            # Words are masked in the kept text, which is then tokenised again: a second pass, in training only.
            kept = self.kept_bodies(bodies)
            masked = [corrupt_words(b, corruption.prob, rng) for b in kept]
            ids, spans = [p.encoding.ids for p in self._prompts(prefix, masked, suffix)], []
            cut = sum(len(k) < len(b) for k, b in zip(kept, bodies, strict=True))
        else:
            ids, spans, cut = self._prompt_ids(prefix, bodies, suffix, budget)
        if corruption.prob > 0 and corruption.level == "token":
            for row, span in zip(ids, spans, strict=True):
                for i in np.flatnonzero(rng.random(len(span)) < corruption.prob):
                    row[span[i]] = self.mask_token_id
        return [self._finish(row) for row in ids], cut

    def kept_bodies(self, bodies: Sequence[str]) -> list[str]:
        """Each passage body (`passage_body(title, text)`) as the text its kept tokens cover."""
        prefix, suffix = self._passage_prefix, self._passage_suffix
        rows = self._cut_prompts(prefix, bodies, suffix, self.config.max_passage_tokens)
        return [b[: r.body_chars(len(b))] for b, r in zip(bodies, rows, strict=True)]

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
            offsets = enc.offsets  # read once: each read of Encoding.offsets builds the whole list again
            windows = token_windows(len(offsets), chunking.tokens, chunking.overlap) if offsets else []
            shift = body_shift(title, text)
            spans = [text_span((offsets[a][0], offsets[b - 1][1]), text, shift) for a, b in windows if b > a]
            out.append(spans or [(0, len(text))])
        return out

    def queries(self, queries: Sequence[str]) -> list[list[int]]:
        """`<bos> query prompt [E]`: the stage-2 query side."""
        bodies = [q.strip() for q in queries]
        ids, _, _ = self._prompt_ids(self._query_prefix, bodies, self._query_suffix, self.config.max_query_tokens)
        return [self._finish(row) for row in ids]

    def ql_queries(self, queries: Sequence[str]) -> list[list[int]]:
        """The query as it follows [E] in stage 1: its tokens, then EOS. Scored as log P(q | d)."""
        encodings = self.tokenizer.encode_batch([q.strip() for q in queries], add_special_tokens=False)
        return [[*e.ids[: self.config.max_query_tokens], self.config.end_token_id] for e in encodings]

    @property
    def mask_token_id(self) -> int:
        if self.config.mask_token_id is None:
            raise ValueError("token-level corruption needs mask_token_id in the model config")
        return self.config.mask_token_id
