"""Padding and length-sorted batching, by count and by a token budget, on hand-made lengths."""

import numpy as np
import pytest

from llmql.train.core.batching import length_batches, pad


def test_batches_by_count_longest_first():
    assert list(length_batches([3, 9, 1, 5], 2)) == [[1, 3], [0, 2]]


def test_a_token_budget_puts_short_rows_in_large_batches_and_long_ones_in_small():
    lengths = [100, 10, 10, 100, 10, 10, 10, 40]
    # sorted: 0 (100), 3 (100), 7 (40), 1, 2, 4, 5, 6 (10 each); budget 200 padded tokens
    assert list(length_batches(lengths, batch_size=64, max_padded_tokens=200)) == [[0, 3], [7, 1, 2, 4, 5], [6]]
    for batch in length_batches(lengths, 64, 200):
        assert len(batch) * max(lengths[i] for i in batch) <= 200


def test_a_row_over_the_budget_is_a_batch_of_its_own_and_every_row_appears_once():
    lengths = [500, 3, 4, 600]
    batches = list(length_batches(lengths, batch_size=8, max_padded_tokens=100))
    assert batches[:2] == [[3], [0]] and sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        list(length_batches(lengths, 0))


def test_pad_right_and_left():
    ids, mask = pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.dtype == np.int64


def test_prefetched_prepares_the_next_batch_while_the_caller_works():
    import threading

    from llmql.train.core.batching import prefetched

    ready = {i: threading.Event() for i in range(4)}

    def prepare(i: int) -> int:
        ready[i].set()
        return i * 10

    out = []
    for item, value in prefetched(range(4), prepare):
        if item < 3:  # the next item is prepared while this one is being used
            assert ready[item + 1].wait(timeout=5)
        out.append((item, value))
    assert out == [(0, 0), (1, 10), (2, 20), (3, 30)]
    assert list(prefetched([], prepare)) == []


def test_prefetched_raises_the_preparation_error_in_the_caller():
    from llmql.train.core.batching import prefetched

    def prepare(i: int) -> int:
        if i == 2:
            raise ValueError("row 2 is bad")
        return i

    seen = []
    with pytest.raises(ValueError, match="row 2 is bad"):
        for item, _ in prefetched(range(5), prepare):
            seen.append(item)
    assert seen == [0, 1]
