"""A split tokenised once into a memory-mapped token stream, and the windows read from it.

The stream of a split of documents ``d_0 … d_{k-1}`` (each a sequence of token ids) is

    EOS d_0 EOS d_1 EOS … EOS d_{k-1} EOS

with ``document_starts (k + 1,)`` the positions of the EOS tokens: document ``j`` is
``tokens[starts[j] + 1 : starts[j + 1]]`` and, with the EOS on either side,
``tokens[starts[j] : starts[j + 1] + 1]`` (neighbouring documents share the EOS between them).
The EOS before a document is its context for predicting the first token; the EOS after it is
predicted as its end. Tokens are uint16 when the vocabulary fits, else uint32.

Windows of a stream of ``n`` tokens at length ``L``: window ``i`` is the ``L + 1`` tokens
``[i·L, i·L + L + 1)``; ``inputs`` are its first ``L`` and ``targets`` its last ``L``. Windows
move by ``L``, so their inputs do not overlap, and the targets of windows ``0, 1, …`` are the
tokens ``1, 2, …, n − 1``, each once. Training reads the ``⌊(n − 1) / L⌋`` whole windows;
evaluation reads ``⌈(n − 1) / L⌉``, the last one padded with ``loss_mask`` False, so that every
token of the split after the leading EOS is predicted exactly once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from typing import Iterable

import numpy as np

from ssmjax.data.source import Batch

_META = "meta.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when ids ``< vocab_size`` fit, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


@dataclasses.dataclass(frozen=True)
class TokenStream:
    """``tokens (n,)`` uint16/uint32 (a memory map when read from the cache) and
    ``document_starts (k + 1,)`` int64 of a split, laid out as the module docstring says."""

    tokens: np.ndarray
    document_starts: np.ndarray

    @property
    def num_documents(self) -> int:
        return self.document_starts.size - 1

    def document(self, j: int) -> np.ndarray:
        """Document ``j``'s tokens, without the EOS around it."""
        return self.tokens[self.document_starts[j] + 1:self.document_starts[j + 1]]

    def delimited_documents(self) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, lengths)`` of every document with the EOS on either side."""
        starts = self.document_starts[:-1]
        return starts, np.diff(self.document_starts) + 1


def write_token_stream(directory: str, encoded: Iterable[list[int]], end_of_document: int,
                       dtype: np.dtype) -> TokenStream:
    """Write the stream of the documents ``encoded`` (lists of ids, in order) into
    ``directory``: ``tokens.bin`` (raw ``dtype``), ``document_starts.npy`` and ``meta.json``.
    Written under a temporary name and renamed, so a directory that exists is complete."""
    partial = f"{directory}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    limit = np.iinfo(dtype).max
    starts = [0]
    with open(os.path.join(partial, "tokens.bin"), "wb") as file:
        np.array([end_of_document], dtype).tofile(file)
        for ids in encoded:
            ids = np.asarray(list(ids) + [end_of_document], dtype=np.int64)
            if ids.size and (ids.min() < 0 or ids.max() > limit):
                raise ValueError(f"token ids {ids.min()}..{ids.max()} do not fit {dtype}")
            ids.astype(dtype).tofile(file)
            starts.append(starts[-1] + ids.size)
    np.save(os.path.join(partial, "document_starts.npy"), np.asarray(starts, np.int64))
    with open(os.path.join(partial, _META), "w") as file:
        json.dump({"dtype": dtype.name, "tokens": starts[-1] + 1, "documents": len(starts) - 1}, file)
    if os.path.isdir(directory):  # another process finished first: keep its copy
        shutil.rmtree(partial)
    else:
        os.replace(partial, directory)
    return read_token_stream(directory)


def read_token_stream(directory: str) -> TokenStream:
    """The stream that :func:`write_token_stream` wrote, its tokens memory-mapped."""
    with open(os.path.join(directory, _META)) as file:
        meta = json.load(file)
    tokens = np.memmap(os.path.join(directory, "tokens.bin"), dtype=np.dtype(meta["dtype"]),
                       mode="r", shape=(meta["tokens"],))
    starts = np.load(os.path.join(directory, "document_starts.npy"))
    return TokenStream(tokens, starts)


def is_token_stream(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, _META))


class TokenWindows:
    """A :class:`~ssmjax.data.source.RandomAccess` of the windows of ``tokens`` (module
    docstring): ``windows[indices]`` is ``{"inputs", "targets": (k, L) int32, "loss_mask":
    (k, L) bool}``.

    Args:
        tokens: ``(n,)`` the token stream.
        sequence_length: ``L``.
        complete: also the last, partial window, padded (evaluation: every target once);
            otherwise whole windows only (training).
    """

    def __init__(self, tokens: np.ndarray, sequence_length: int, *, complete: bool = False):
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, (int, np.integer)) \
                or sequence_length < 1:
            raise ValueError(f"sequence_length is {sequence_length!r}, expected a positive integer")
        targets = len(tokens) - 1
        count = math.ceil(targets / sequence_length) if complete else targets // sequence_length
        if count < 1:
            raise ValueError(f"the stream has {len(tokens)} tokens, fewer than sequence_length + 1 "
                             f"= {sequence_length + 1} for one window")
        self.tokens = tokens
        self.sequence_length = int(sequence_length)
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, indices: np.ndarray) -> Batch:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise ValueError(f"window indices must lie in 0..{len(self) - 1}, got "
                             f"{indices.min()}..{indices.max()}")
        positions = indices[:, None] * self.sequence_length + np.arange(self.sequence_length + 1)
        real = positions < len(self.tokens)
        window = np.where(real, self.tokens[np.minimum(positions, len(self.tokens) - 1)], 0)
        window = window.astype(np.int32)
        return {"inputs": window[:, :-1], "targets": window[:, 1:], "loss_mask": real[:, 1:]}


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy of the token frequencies of ``tokens (n,)`` in nats per token,
    ``−Σ_v p_v log p_v`` with ``p_v`` the share of token ``v``: the loss of the best model that
    ignores context."""
    counts = np.zeros(1, np.int64)
    for start in range(0, len(tokens), 1 << 24):  # a memory map is read a block at a time
        block = np.bincount(np.asarray(tokens[start:start + (1 << 24)]))
        counts = np.pad(counts, (0, max(0, block.size - counts.size)))
        counts[:block.size] += block
    if counts.sum() == 0:
        raise ValueError("tokens is empty, expected at least one token")
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
