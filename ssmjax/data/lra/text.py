"""Byte-level text classification (LRA's Text task, Tay et al. 2021, §3.2): the sentiment of an
IMDB movie review (Maas et al. 2011) read as UTF-8 bytes, 25,000 training and 25,000 test
reviews, the test split doubling as validation as in LRA.

The reviews come from the Stanford archive ``aclImdb_v1.tar.gz`` (the one tfds' ``imdb_reviews``
downloads) or from its extracted ``aclImdb/`` tree on disk. As ``imdb_reviews``, which LRA
reads, a review is its file's bytes without leading and trailing whitespace, and the label is
0 for ``neg`` and 1 for ``pos``; reviews are stored in path order.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import ClassVar, Iterator

import numpy as np

from ssmjax.data.lra.tasks import (BYTE_OFFSET, BYTE_VOCAB_SIZE, Download, FileTask,
                                   SequenceField, missing_files)

IMDB_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
LABELS = ("neg", "pos")
STORED_SPLITS = ("train", "test")


def review_folders(root: pathlib.Path) -> dict[pathlib.Path, bool]:
    """The four folders of ``root/aclImdb`` that hold reviews, each True if it holds a
    ``*.txt``."""
    folders = [root / "aclImdb" / split / label for split in STORED_SPLITS for label in LABELS]
    return {folder: folder.is_dir() and next(folder.glob("*.txt"), None) is not None
            for folder in folders}


def read_reviews(root: pathlib.Path, split: str) -> Iterator[dict[str, np.ndarray | int]]:
    """``{"tokens": (n,) uint8 bytes, "label": 0 | 1}`` of ``root/aclImdb/<split>/{neg,pos}``,
    in path order."""
    for label, name in enumerate(LABELS):
        for path in sorted((root / "aclImdb" / split / name).glob("*.txt")):
            yield {"tokens": np.frombuffer(path.read_bytes().strip(), np.uint8), "label": label}


@dataclasses.dataclass(frozen=True)
class TextClassification(FileTask):
    """LRA Text: ``inputs (b, max_length)`` byte ids (byte + 1; 0 pads), ``mask``, ``label (b,)``
    (1 = positive review). Splits ``train`` and ``test``; ``validation`` is ``test``.

    Args:
        data_dir: where tensorflow-datasets keeps the prepared data (None: its default).
        manual_dir: a directory holding the extracted ``aclImdb/`` tree
            (``aclImdb/{train,test}/{pos,neg}/*.txt``); None downloads the archive.
        max_length: reviews are cut to this many bytes (LRA and S4: 4096).
    """

    max_length: int = 4096

    builder_name: ClassVar[str] = "lra_text"
    fields: ClassVar[tuple[SequenceField, ...]] = (SequenceField("tokens", "inputs", "mask"),)
    token_offset: ClassVar[int] = BYTE_OFFSET
    vocab_size: ClassVar[int] = BYTE_VOCAB_SIZE
    num_classes: ClassVar[int] = 2

    @property
    def builder_config_name(self) -> str:
        return "imdb_bytes"

    def _remedy(self) -> str:
        return ("Extract aclImdb_v1.tar.gz (" + IMDB_URL + ") into a directory and pass it as "
                "TextClassification(manual_dir=...), or leave manual_dir=None to download it.")

    def check_files(self) -> None:
        if self.manual_dir is None:
            return
        folders = review_folders(pathlib.Path(self.manual_dir))
        if not all(folders.values()):
            raise missing_files("TextClassification",
                                {f"{folder}/*.txt": present for folder, present in folders.items()},
                                self._remedy())

    def split_examples(self, download: Download) -> dict[str, Iterator[dict]]:
        if self.manual_dir is not None:
            root = pathlib.Path(self.manual_dir)
        else:
            try:
                root = download(IMDB_URL)
            except Exception as error:  # no network, a proxy, a moved archive: say what to do
                raise FileNotFoundError(f"TextClassification could not download {IMDB_URL} "
                                        f"({error}). {self._remedy()}") from error
            folders = review_folders(root)
            if not all(folders.values()):
                raise missing_files("TextClassification's download",
                                    {f"{folder}/*.txt": present
                                     for folder, present in folders.items()}, self._remedy())
        return {split: read_reviews(root, split) for split in STORED_SPLITS}

    def stored_split(self, split: str) -> str:
        return "test" if split == "validation" else split
