"""What the Long Range Arena tasks share: a frozen config that prepares its data set once as a
tensorflow-datasets builder (array_record files, read back by index without TensorFlow) and
reads it into padded numpy batches.

A prepared example stores each sequence unpadded (``uint8`` token ids, or raw UTF-8 bytes for
the byte-level tasks) and its label; reading cuts a sequence to ``max_length``, maps it to
model ids (``id = stored + token_offset``: the byte-level tasks keep 0 for padding, so byte
``b`` is id ``b + 1`` and the vocabulary has 257 ids, as LRA's byte encoder), appends the end
token if the task has one, pads with 0 on the right and marks real tokens in a mask. So one
prepared data set serves every ``max_length``.
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from typing import Any, Callable, ClassVar, Iterator, NamedTuple, Sequence

import numpy as np

from ssmjax.data.source import Batch, BatchSource

SPLITS = ("train", "validation", "test")
LABEL = "label"
BYTE_OFFSET = 1
BYTE_VOCAB_SIZE = 256 + BYTE_OFFSET


class SequenceField(NamedTuple):
    """A stored sequence and the batch keys of its padded ids and its mask."""

    stored: str
    inputs: str
    mask: str


def pad_sequences(sequences: Sequence[np.ndarray], length: int, token_offset: int = 0,
                  end_token: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stored sequences → ``(ids (k, length) int32, mask (k, length) bool)``.

    Each sequence is cut to ``length`` (``length − 1`` when ``end_token`` follows it), shifted
    by ``token_offset``, followed by ``end_token`` if given, and padded with 0; ``mask`` is True
    on the real tokens (the end token included)."""
    room = length - (end_token is not None)
    ids = np.zeros((len(sequences), length), np.int32)
    for row, sequence in enumerate(sequences):
        kept = np.asarray(sequence)[:room]
        ids[row, :kept.shape[0]] = kept.astype(np.int32) + token_offset
        if end_token is not None:
            ids[row, kept.shape[0]] = end_token
    lengths = np.array([min(len(sequence), room) for sequence in sequences], np.int64)
    mask = np.arange(length) < (lengths + (end_token is not None))[:, None]
    return ids, mask


class TokenSequences:
    """A prepared split as a :class:`~ssmjax.data.source.RandomAccess`: ``data[indices]`` reads
    those examples and pads them (:func:`pad_sequences`) into ``{inputs, mask, [inputs2, mask2,]
    label}``, ``(k, length)`` int32 / bool and ``(k,)`` int32.

    Args:
        records: a random-access source of stored examples (tfds' ``as_data_source``).
        fields: the stored sequences to read.
        length, token_offset, end_token: see :func:`pad_sequences`.
    """

    def __init__(self, records: Any, fields: Sequence[SequenceField], length: int,
                 token_offset: int = 0, end_token: int | None = None):
        self.records = records
        self.fields = tuple(fields)
        self.length = length
        self.token_offset = token_offset
        self.end_token = end_token

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, indices: np.ndarray) -> Batch:
        rows = self.records.__getitems__([int(index) for index in np.asarray(indices).reshape(-1)])
        batch = {}
        for field in self.fields:
            batch[field.inputs], batch[field.mask] = pad_sequences(
                [row[field.stored] for row in rows], self.length, self.token_offset, self.end_token)
        batch[LABEL] = np.asarray([row[LABEL] for row in rows], np.int32)
        return batch


def missing_files(task: str, expected: dict[str, bool], remedy: str) -> FileNotFoundError:
    """The error of a task whose input files are not all there: every expected file (``True`` =
    present), which are missing, and ``remedy`` (where to get them and which argument points at
    them)."""
    listing = "\n".join(f"  {name}{'' if present else '   <- missing'}"
                        for name, present in expected.items())
    absent = sum(not present for present in expected.values())
    return FileNotFoundError(f"{task} reads these files, {absent} of them missing:\n{listing}\n"
                             f"{remedy}")


Download = Callable[[str], pathlib.Path]


@dataclasses.dataclass(frozen=True)
class FileTask(abc.ABC):
    """An LRA task whose data is a tfds builder prepared under ``data_dir``; subclasses name the
    builder, its stored fields and how examples are made (:meth:`split_examples`).

    Data is prepared once, on first use, into ``data_dir/<builder_name>/<builder_config_name>/``
    and read from there afterwards: to read changed input files, remove that folder.

    Args:
        data_dir: where tensorflow-datasets keeps prepared data (None: its default,
            ``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``).
        manual_dir: the directory of the task's local input files (see the subclass).
    """

    data_dir: str | None = None
    manual_dir: str | None = None

    max_length: ClassVar[int]
    builder_name: ClassVar[str]
    fields: ClassVar[tuple[SequenceField, ...]]
    token_offset: ClassVar[int] = 0
    end_token: ClassVar[int | None] = None
    vocab_size: ClassVar[int]
    num_classes: ClassVar[int]

    def __post_init__(self):
        length = self.max_length
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"max_length is {length!r}, expected a positive integer")

    @property
    def sequence_length(self) -> int:
        """Length of every padded sequence of a batch."""
        return self.max_length

    # What a task defines.
    @property
    @abc.abstractmethod
    def builder_config_name(self) -> str:
        """Name of the prepared data under ``data_dir/<builder_name>/``: everything that changes
        the stored examples (not ``max_length``, applied when reading)."""
        raise NotImplementedError

    def check_files(self) -> None:
        """Raise :func:`missing_files`'s error unless every local input file is there."""

    @abc.abstractmethod
    def split_examples(self, download: Download) -> dict[str, Iterator[dict[str, Any]]]:
        """The stored splits: name → stored examples (each field of :attr:`fields` and
        ``label``) in order; ``download(url)`` fetches and extracts an archive."""

    def stored_split(self, split: str) -> str:
        """The stored split that serves ``split`` (LRA's Text validates on its test split)."""
        return split

    # What every task gets.
    def prepare(self):
        """The tfds builder of this task's data, prepared (a no-op once the files exist; in a
        multi-host run on shared storage, call it on one host first)."""
        self.check_files()
        try:
            from ssmjax.data.lra import builders
        except ImportError as error:
            raise ImportError(f"{type(self).__name__} prepares and reads its data with "
                              "tensorflow-datasets and array_record: pip install "
                              f"'ssmjax[data]' ({error})") from error
        return builders.prepared(self)

    def data(self, split: str) -> TokenSequences:
        """The random-access padded examples of ``split`` (``train``, ``validation``, ``test``),
        e.g. for :func:`~ssmjax.data.source.evaluation_batches`."""
        if split not in SPLITS:
            raise ValueError(f"split is {split!r}, expected one of {SPLITS}")
        records = self.prepare().as_data_source(split=self.stored_split(split))
        return TokenSequences(records, self.fields, self.max_length, self.token_offset,
                              self.end_token)

    def source(self, split: str, batch_size: int, *, seed: int, shuffle: bool = True,
               drop_remainder: bool = True, process_index: int | None = None,
               process_count: int | None = None) -> BatchSource:
        """Seeded, resumable training batches of ``split``: ``batch_at(step)`` is this process's
        rows of global batch ``step`` (:class:`~ssmjax.data.source.BatchSource`)."""
        return BatchSource(self.data(split), batch_size, seed=seed, shuffle=shuffle,
                           drop_remainder=drop_remainder, process_index=process_index,
                           process_count=process_count)
