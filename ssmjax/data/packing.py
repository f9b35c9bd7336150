"""Packing variable-length sequences (documents) into rows of a fixed length.

A row of ``L`` positions holds one or more *segments*, each a contiguous piece of one
sequence, numbered ``1, 2, …`` from the left in ``segment_ids``; unused positions are padding,
segment 0. The next-token targets are read inside a segment only:

    targets[t]   = inputs[t + 1]                     where segment_ids[t + 1] == segment_ids[t]
    loss_mask[t] = segment_ids[t] ≠ 0  and  segment_ids[t + 1] == segment_ids[t]

so the last position of a segment (whose right neighbour is another document or padding) and
the padding are not scored: no target crosses a boundary.

A sequence longer than ``L`` is cut into pieces of ``L`` tokens that overlap by one token
(piece ``i`` starts at ``i·(L − 1)``): the last token of a piece is the first input of the
next one, so every next-token target of the sequence is scored in exactly one piece. Pieces
are placed first-fit, in the order of the sequences: each goes to the lowest-numbered row
with room for it (a segment tree over the rows' free space finds it in ``O(log rows)``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssmjax.data.source import Batch


def _check_row_length(row_length) -> int:
    if isinstance(row_length, bool) or not isinstance(row_length, (int, np.integer)) or row_length < 2:
        raise ValueError(f"row_length is {row_length!r}, expected an integer >= 2 "
                         "(a segment needs an input and its target)")
    return int(row_length)


def split_into_pieces(lengths: np.ndarray, row_length: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pieces of at most ``row_length`` tokens of sequences of ``lengths (k,)``, consecutive
    pieces of one sequence overlapping by one token (the module docstring).

    Returns:
        ``(sequence, offset, length)``, each ``(p,)`` int64: piece ``j`` is tokens
        ``[offset[j], offset[j] + length[j])`` of sequence ``sequence[j]``, in order.
    """
    row_length = _check_row_length(row_length)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths.size and lengths.min() < 1):
        raise ValueError(f"lengths must be a (k,) array of positive lengths, got shape "
                         f"{lengths.shape} with minimum {lengths.min() if lengths.size else None}")
    stride = row_length - 1
    # A sequence of n ≤ L tokens is one piece; longer ones need ⌈(n − 1) / (L − 1)⌉ pieces.
    counts = np.where(lengths <= row_length, 1, -(-(lengths - 1) // stride))
    sequence = np.repeat(np.arange(lengths.size, dtype=np.int64), counts)
    first_piece = np.cumsum(counts) - counts
    index_in_sequence = np.arange(sequence.size, dtype=np.int64) - np.repeat(first_piece, counts)
    offset = index_in_sequence * stride
    length = np.minimum(lengths[sequence] - offset, row_length)
    return sequence, offset, length


def first_fit(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First-fit bin packing of items of ``lengths (p,)`` (each ≤ ``capacity``) in order.

    Returns:
        ``(row, column, rows)``: item ``j`` occupies columns ``[column[j], column[j] +
        lengths[j])`` of row ``row[j]`` (both ``(p,)`` int64); ``rows`` rows are used.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > capacity):
        raise ValueError(f"lengths must lie in 1..{capacity}, got {lengths.min()}..{lengths.max()}")
    leaves = 1
    while leaves < max(lengths.size, 1):
        leaves *= 2
    # free[node]: the most free space of any row under node; rows are leaves, all empty at first.
    free = [capacity] * (2 * leaves)
    used = [0] * leaves
    rows_used = 0
    row = np.empty(lengths.size, dtype=np.int64)
    column = np.empty(lengths.size, dtype=np.int64)
    for item, size in enumerate(lengths.tolist()):
        node = 1
        while node < leaves:  # descend to the leftmost row with room
            node = 2 * node if free[2 * node] >= size else 2 * node + 1
        leaf = node - leaves
        row[item], column[item] = leaf, used[leaf]
        used[leaf] += size
        rows_used = max(rows_used, leaf + 1)
        free[node] = capacity - used[leaf]
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return row, column, rows_used


@dataclasses.dataclass(frozen=True)
class Packing:
    """Where the pieces of packed sequences go (all arrays ``(p,)`` int64, pieces sorted by
    row then column): piece ``j`` is ``tokens[start[j] : start[j] + length[j]]``, placed at
    columns ``column[j] …`` of row ``row[j]`` as segment ``segment[j]`` (1, 2, … in the row);
    it comes from sequence ``sequence[j]``. Row ``r``'s pieces are
    ``row_pointer[r] : row_pointer[r + 1]``."""

    start: np.ndarray
    length: np.ndarray
    sequence: np.ndarray
    row: np.ndarray
    column: np.ndarray
    segment: np.ndarray
    row_pointer: np.ndarray
    row_length: int

    @property
    def rows(self) -> int:
        return self.row_pointer.size - 1


def pack_sequences(starts: np.ndarray, lengths: np.ndarray, row_length: int) -> Packing:
    """Pack the sequences ``tokens[starts[i] : starts[i] + lengths[i]]`` (``starts, lengths
    (k,)``) first-fit into rows of ``row_length``, long ones in overlapping pieces."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if starts.shape != lengths.shape:
        raise ValueError(f"starts has shape {starts.shape} and lengths {lengths.shape}, "
                         "expected the same (k,)")
    sequence, offset, length = split_into_pieces(lengths, row_length)
    row, column, rows = first_fit(length, row_length)
    order = np.lexsort((column, row))
    sequence, offset, length, row, column = (a[order] for a in (sequence, offset, length, row, column))
    row_pointer = np.searchsorted(row, np.arange(rows + 1), side="left").astype(np.int64)
    segment = np.arange(row.size, dtype=np.int64) - row_pointer[row] + 1
    return Packing(start=starts[sequence] + offset, length=length, sequence=sequence, row=row,
                   column=column, segment=segment, row_pointer=row_pointer,
                   row_length=int(row_length))


class PackedRows:
    """A :class:`~ssmjax.data.source.RandomAccess` of packed rows: ``rows[indices]`` is
    ``{"inputs", "targets": (k, L) int32, "loss_mask": (k, L) bool, "segment_ids": (k, L)
    int32}`` as the module docstring defines them (padding inputs and targets are 0).

    Args:
        tokens: ``(n,)`` integer tokens (a memory map is read only where rows need it).
        starts, lengths: ``(k,)`` the sequences to pack, ``tokens[starts[i] : starts[i] + lengths[i]]``.
        row_length: ``L``, at least 2.
    """

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, row_length: int):
        starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
        if starts.size and (starts.min() < 0 or (starts + lengths).max() > len(tokens)):
            raise ValueError(f"sequences reach outside the {len(tokens)} tokens")
        self.tokens = tokens
        self.packing = pack_sequences(starts, lengths, row_length)

    def __len__(self) -> int:
        return self.packing.rows

    def __getitem__(self, indices: np.ndarray) -> Batch:
        packing, row_length = self.packing, self.packing.row_length
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise ValueError(f"row indices must lie in 0..{len(self) - 1}, got "
                             f"{indices.min()}..{indices.max()}")
        first, last = packing.row_pointer[indices], packing.row_pointer[indices + 1]
        counts = last - first
        pieces = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        batch_row = np.repeat(np.arange(indices.size), counts)
        lengths = packing.length[pieces]
        token_piece = np.repeat(np.arange(pieces.size), lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows, columns = batch_row[token_piece], packing.column[pieces][token_piece] + within
        inputs = np.zeros((indices.size, row_length), np.int32)
        segment_ids = np.zeros((indices.size, row_length), np.int32)
        inputs[rows, columns] = self.tokens[packing.start[pieces][token_piece] + within]
        segment_ids[rows, columns] = packing.segment[pieces][token_piece]
        loss_mask = np.zeros((indices.size, row_length), bool)
        loss_mask[:, :-1] = (segment_ids[:, :-1] != 0) & (segment_ids[:, 1:] == segment_ids[:, :-1])
        targets = np.zeros_like(inputs)
        targets[:, :-1] = np.where(loss_mask[:, :-1], inputs[:, 1:], 0)
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask,
                "segment_ids": segment_ids}
