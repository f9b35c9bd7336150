"""Packing: every document's targets are scored exactly once, in order, inside its own
segments; loss_mask is False exactly across boundaries and at padding; placement is first-fit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmjax.data.packing import PackedRows, first_fit, pack_sequences, split_into_pieces


def naive_first_fit(lengths, capacity):
    """Reference: scan the rows from the first for each item."""
    used, placement = [], []
    for size in lengths:
        for row, filled in enumerate(used):
            if filled + size <= capacity:
                break
        else:
            row = len(used)
            used.append(0)
        placement.append((row, used[row]))
        used[row] += size
    return placement, len(used)


def documents_and_stream(lengths, seed=0):
    """Documents of the given lengths with distinct random tokens, concatenated."""
    tokens = np.random.default_rng(seed).permutation(10 * sum(lengths) + 10)[:sum(lengths)] + 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return tokens.astype(np.uint32), starts, np.asarray(lengths, np.int64)


def check_packed(lengths, row_length):
    tokens, starts, lengths = documents_and_stream(lengths)
    rows = PackedRows(tokens, starts, lengths, row_length)
    batch = rows[np.arange(len(rows))]
    inputs, targets, mask, segments = (batch[k] for k in ("inputs", "targets", "loss_mask",
                                                          "segment_ids"))
    assert inputs.shape == (len(rows), row_length) and inputs.dtype == np.int32
    assert segments.dtype == np.int32 and mask.dtype == bool
    # loss_mask is False exactly at the last position of a segment and at padding.
    right = np.concatenate([segments[:, 1:], np.zeros((len(rows), 1), np.int32)], axis=1)
    np.testing.assert_array_equal(mask, (segments != 0) & (right == segments))
    next_inputs = np.concatenate([inputs[:, 1:], np.zeros((len(rows), 1), np.int32)], axis=1)
    np.testing.assert_array_equal(targets[mask], next_inputs[mask])
    assert not targets[~mask].any() and not inputs[segments == 0].any()
    # Segments number 1, 2, ... from the left, padding only after the last one.
    for row in segments:
        used = row[row != 0]
        assert np.all(np.diff(used) >= 0) and (used.size == 0 or used[0] == 1)
        assert np.all(np.diff(np.unique(used)) == 1)
        assert np.all(row[used.size:] == 0)
    # Each document: its segments, in the document's order (a short last piece may sit in an
    # earlier row), are contiguous slices; their scored targets are the document's tokens
    # after the first, each once.
    packing = rows.packing
    for doc, (start, length) in enumerate(zip(starts, lengths)):
        document = tokens[start:start + length]
        scored, covered = [], 0
        pieces = np.flatnonzero(packing.sequence == doc)
        for piece in pieces[np.argsort(packing.start[pieces])]:
            r, c, n = packing.row[piece], packing.column[piece], packing.length[piece]
            segment = segments[r] == packing.segment[piece]
            assert segment.sum() == n and np.all(np.flatnonzero(segment) == c + np.arange(n))
            offset = packing.start[piece] - start
            np.testing.assert_array_equal(inputs[r, c:c + n], document[offset:offset + n])
            assert offset == max(covered - 1, 0)  # overlapping the previous piece by one token
            covered = offset + n
            scored.append(targets[r][segment & mask[r]])
        assert covered == length
        np.testing.assert_array_equal(np.concatenate(scored), document[1:])
    return rows


@pytest.mark.parametrize("lengths", [
    [1, 1, 1, 1, 1],                      # single tokens: nothing to predict, still placed
    [8, 8, 8],                            # exactly L
    [9, 17, 40],                          # longer than L: pieces of L overlapping by one
    [2] * 37,                             # many short ones share rows
    [1, 8, 9, 2, 3, 15, 16, 1, 7, 64, 2, 2],
])
def test_adversarial_documents(lengths):
    check_packed(lengths, row_length=8)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(2, 12))
def test_any_documents_any_row_length(lengths, row_length):
    check_packed(lengths, row_length)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 10), min_size=1, max_size=60), st.integers(10, 16))
def test_placement_is_first_fit(lengths, capacity):
    row, column, rows = first_fit(np.array(lengths), capacity)
    placement, expected_rows = naive_first_fit(lengths, capacity)
    assert rows == expected_rows
    assert list(zip(row.tolist(), column.tolist())) == placement


def test_pieces_of_long_sequences():
    sequence, offset, length = split_into_pieces(np.array([1, 4, 5, 9]), 4)
    np.testing.assert_array_equal(sequence, [0, 1, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(offset, [0, 0, 0, 3, 0, 3, 6])
    np.testing.assert_array_equal(length, [1, 4, 4, 2, 4, 4, 3])


def test_rows_can_be_read_in_any_order_and_alone():
    tokens, starts, lengths = documents_and_stream([3, 9, 2, 5, 1, 12])
    rows = PackedRows(tokens, starts, lengths, 6)
    everything = rows[np.arange(len(rows))]
    picked = np.array([len(rows) - 1, 0, 2, 0])
    some = rows[picked]
    for key in everything:
        np.testing.assert_array_equal(some[key], everything[key][picked])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="row_length is 1, expected an integer >= 2"):
        split_into_pieces(np.array([3]), 1)
    with pytest.raises(ValueError, match="positive lengths"):
        split_into_pieces(np.array([3, 0]), 4)
    with pytest.raises(ValueError, match="starts has shape"):
        pack_sequences(np.array([0, 1]), np.array([1]), 4)
    with pytest.raises(ValueError, match="outside the 5 tokens"):
        PackedRows(np.arange(5), np.array([3]), np.array([3]), 4)
    rows = PackedRows(np.arange(5), np.array([0]), np.array([5]), 4)
    with pytest.raises(ValueError, match="row indices must lie in 0..1"):
        rows[np.array([2])]
