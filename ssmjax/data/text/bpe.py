"""Byte-level BPE (Sennrich, Haddow & Birch 2016, on bytes as GPT-2) trained with the
``tokenizers`` library.

Every string round-trips exactly (``decode(encode(s)) == s``): the pre-tokenizer maps bytes to
256 printable symbols, all of which are in the vocabulary from the start. One special token,
:data:`END_OF_DOCUMENT`, takes id 0 and delimits documents in the token streams. Training
on the same texts at the same size writes a byte-identical ``tokenizer.json``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from tokenizers import Tokenizer

END_OF_DOCUMENT = "<|endoftext|>"
# The 256 byte symbols and the end-of-document token.
MIN_VOCAB_SIZE = 257


def check_vocab_size(vocab_size) -> int:
    """``vocab_size`` if it is an integer that holds the byte alphabet and EOS."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size is {vocab_size!r}, expected an integer >= {MIN_VOCAB_SIZE} "
                         "(the 256 bytes and the end-of-document token)")
    return vocab_size


def train_bpe(texts: Iterable[str], vocab_size: int, *, length: int | None = None) -> Tokenizer:
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens learned from ``texts``
    (``length``: how many, for the trainer's bookkeeping). Fewer tokens result when the
    texts run out of pairs seen at least twice."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check_vocab_size(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[END_OF_DOCUMENT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer, length=length)
    return tokenizer


def end_of_document_id(tokenizer: Tokenizer) -> int:
    """The id of :data:`END_OF_DOCUMENT` in ``tokenizer``."""
    token = tokenizer.token_to_id(END_OF_DOCUMENT)
    if token is None:
        raise ValueError(f"the tokenizer has no {END_OF_DOCUMENT} token")
    return token


def load_tokenizer(path: str) -> Tokenizer:
    """``tokenizer.json`` at ``path``, set to read the text "<|endoftext|>" inside a document
    as text, not as a document boundary."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.encode_special_tokens = True
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str) -> None:
    """Write ``tokenizer.json`` atomically (readers never see half a file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    tokenizer.save(partial, pretty=True)
    os.replace(partial, path)
