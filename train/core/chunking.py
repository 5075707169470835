"""Long documents as overlapping passages, and a document's score as its best passage's (MaxP).

Pure functions: the windows over a document's tokens, their character spans in its text, the settings check,
and the per-document maximum every backend and the QL re-ranker aggregate with.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Chunking:
    """`tokens` body tokens a passage (title and text as the model reads them), `overlap` shared by neighbours."""

    tokens: int
    overlap: int = 0

    def __str__(self) -> str:
        return f"{self.tokens}/{self.overlap}"


def check_chunking(tokens: int, overlap: int, window: int) -> Chunking:
    """The settings, or ValueError naming what is wrong: a passage longer than the model's passage window would
    be cut again, and an overlap not smaller than the passage would never advance."""
    if tokens < 1:
        raise ValueError(f"--chunk-tokens must be at least 1, not {tokens}")
    if tokens > window:
        raise ValueError(
            f"--chunk-tokens {tokens} is larger than the model's passage window of {window} tokens "
            "(max_passage_tokens, set when it was trained); passages that long would be cut"
        )
    if not 0 <= overlap < tokens:
        raise ValueError(f"--chunk-overlap must be at least 0 and smaller than --chunk-tokens {tokens}, not {overlap}")
    return Chunking(tokens, overlap)


def token_windows(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) windows over `length` tokens: each `size` long (the last may be shorter), neighbours sharing
    exactly `overlap`, every token in at least one; a document that fits is one window."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"windows need size >= 1 and 0 <= overlap < size, not {size} and {overlap}")
    windows = [(0, min(size, length))]
    while windows[-1][1] < length:
        start = windows[-1][0] + size - overlap
        windows.append((start, min(start + size, length)))
    return windows


def body_shift(title: str, text: str) -> int:
    """Where `text` starts in the passage body `"{title} {text}"` (both stripped, as `passage_body` joins them),
    less its own leading whitespace: a body offset minus this is an offset in `text`."""
    title = title.strip()
    lead = len(text) - len(text.lstrip())
    return (len(title) + 1 if title else 0) - lead


def text_span(body_span: tuple[int, int], text: str, shift: int) -> tuple[int, int]:
    """A character span of the passage body -> the same span in the original `text` (`shift`: `body_shift`),
    clamped to it (a span inside the title maps to the text's start). Computed once a window, so nothing here
    may walk the text: a document of a million words has tens of thousands of windows."""
    a, b = (min(max(x - shift, 0), len(text)) for x in body_span)
    return a, b


def passage_parts(title: str, text: str, spans: Iterable[tuple[int, int]]) -> list[tuple[str, str]]:
    """The (title, text) each passage is encoded from: the first carries the title, the others only their text;
    sync, the cached [E] states and the full QL pass all build passages from these, so they agree."""
    return [(title if i == 0 else "", text[a:b]) for i, (a, b) in enumerate(spans)]


def max_per_key(scored: Iterable[tuple[K, float, int]]) -> dict[K, tuple[float, int]]:
    """(key, score, passage) triples -> each key's best (score, passage); a tie keeps the earlier passage."""
    best: dict[K, tuple[float, int]] = {}
    for key, score, passage in scored:
        current = best.get(key)
        if current is None or score > current[0] or (score == current[0] and passage < current[1]):
            best[key] = (score, passage)
    return best
