"""Chunk windows, their spans in the text, the settings check and MaxP, on hand-made examples."""

import itertools

import pytest

from llmql.train.core.chunking import (
    body_shift,
    check_chunking,
    max_per_key,
    passage_parts,
    text_span,
    token_windows,
)


def test_windows_cover_every_token_with_exact_overlap():
    assert token_windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert token_windows(11, 4, 1) == [(0, 4), (3, 7), (6, 10), (9, 11)]
    assert token_windows(8, 4, 0) == [(0, 4), (4, 8)]
    assert token_windows(3, 4, 2) == [(0, 3)]  # a document that fits is one passage
    for length in range(1, 40):
        for size, overlap in [(1, 0), (5, 0), (5, 2), (7, 6)]:
            windows = token_windows(length, size, overlap)
            assert set().union(*(set(range(a, b)) for a, b in windows)) == set(range(length))
            assert all(b - a <= size for a, b in windows)
            assert all(prev[1] - nxt[0] == overlap for prev, nxt in itertools.pairwise(windows))


@pytest.mark.parametrize("size, overlap", [(0, 0), (4, 4), (4, 5), (4, -1)])
def test_windows_refuse_settings_that_never_advance(size, overlap):
    with pytest.raises(ValueError):
        token_windows(10, size, overlap)


def test_chunk_settings_are_checked_against_the_model_window():
    assert str(check_chunking(64, 16, 200)) == "64/16"
    with pytest.raises(ValueError, match="larger than the model's passage window of 200"):
        check_chunking(256, 0, 200)
    with pytest.raises(ValueError, match="smaller than --chunk-tokens 64"):
        check_chunking(64, 64, 200)
    with pytest.raises(ValueError, match="at least 1"):
        check_chunking(0, 0, 200)


def test_text_spans_skip_the_title_and_the_text_s_leading_space():
    title, text = "Ti", "  hello world"  # the body the model reads is "Ti hello world"
    shift = body_shift(title, text)
    assert text_span((0, 5), text, shift) == (0, 4)  # "Ti he": inside the title maps to the text's start
    assert text[slice(*text_span((3, 8), text, shift))] == "hello"
    assert text[slice(*text_span((9, 14), text, shift))] == "world"
    assert text_span((0, 5), "hello world", body_shift("", "hello world")) == (0, 5)
    assert text_span((0, 99), "short", body_shift("", "short")) == (0, 5)  # clamped to the text


def test_passage_parts_put_the_title_on_the_first_passage_only():
    assert passage_parts("T", "abcdefgh", [(0, 4), (3, 8)]) == [("T", "abcd"), ("", "defgh")]


def test_maxp_keeps_each_document_s_best_passage():
    scored = [("a", 0.2, 0), ("b", 0.9, 0), ("a", 0.7, 1), ("a", 0.5, 2), ("b", 0.9, 1), ("c", -1.0, 3)]
    assert max_per_key(scored) == {"a": (0.7, 1), "b": (0.9, 0), "c": (-1.0, 3)}  # a tie keeps the earlier
    assert max_per_key([]) == {}


def test_chunk_spans_follow_the_tokenizer_s_own_tokens(tiny_export):
    from llmql.export.runtime import OnnxEncoder
    from llmql.train.core.chunking import Chunking
    from llmql.train.core.prompts import passage_body

    tokenizer = OnnxEncoder.from_dir(tiny_export).tokenizer
    title = "Granite"
    text = " ".join(f"word{i} granite ridge" for i in range(30))
    (spans,) = tokenizer.chunk_spans([title], [text], Chunking(12, 3))
    body = passage_body(title, text)
    offsets = tokenizer.tokenizer.encode(body, add_special_tokens=False).offsets
    shift = len(title) + 1
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    covered = set().union(*(set(range(a, b)) for a, b in spans))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())  # every character in a passage
    for (_, prev_end), (next_start, _) in itertools.pairwise(spans):
        shared = [o for o in offsets if o[0] - shift >= next_start - 1 and o[1] - shift <= prev_end]
        assert len([o for o in shared if o[1] - shift > next_start]) == 3  # neighbours share exactly 3 tokens
    (short,) = tokenizer.chunk_spans([""], ["a short text"], Chunking(12, 3))
    assert short == [(0, len("a short text"))]
    whole = tokenizer.passages([title], [text[: spans[0][1]]])[0]
    assert len(whole) - (len(tokenizer.passages([""], [""])[0])) <= 12 + 1  # a passage holds about its 12 tokens
