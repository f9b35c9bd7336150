"""Byte-level document retrieval (LRA's Retrieval task, Tay et al. 2021, §3.3): whether one
paper of the ACL Anthology Network (AAN, Radev et al. 2013) cites the other, read as two
UTF-8 byte sequences of up to 4000 bytes each.

LRA's release holds the pairs in ``new_aan_pairs.{train,eval,test}.tsv``: one pair a line,
tab-separated ``label  id1  id2  text1  text2``, no header and no quoting (LRA reads them with
quote handling off); the label is 0 or 1, written ``0``/``1`` or ``0.0``/``1.0``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import ClassVar, Iterator

import numpy as np

from ssmjax.data.lra.tasks import (BYTE_OFFSET, BYTE_VOCAB_SIZE, Download, FileTask,
                                   SequenceField, missing_files)

PAIR_FILES = {"train": "new_aan_pairs.train.tsv", "validation": "new_aan_pairs.eval.tsv",
              "test": "new_aan_pairs.test.tsv"}
COLUMNS = ("label", "id1", "id2", "text1", "text2")
LABELS = {b"0": 0, b"1": 1, b"0.0": 0, b"1.0": 1}


def read_pairs(path: pathlib.Path) -> Iterator[dict[str, np.ndarray | int]]:
    """``{"tokens": text1, "tokens2": text2 ((n,) uint8 bytes), "label": 0 | 1}`` of one pairs
    file, in file order."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.rstrip(b"\r\n").split(b"\t")
            if len(fields) != len(COLUMNS) or fields[0] not in LABELS:
                raise ValueError(f"{path}, line {number}: expected {len(COLUMNS)} tab-separated "
                                 f"fields {COLUMNS} with label 0 or 1, got {len(fields)} fields "
                                 f"beginning {line[:60]!r}")
            yield {"tokens": np.frombuffer(fields[3], np.uint8),
                   "tokens2": np.frombuffer(fields[4], np.uint8), "label": LABELS[fields[0]]}


@dataclasses.dataclass(frozen=True)
class Retrieval(FileTask):
    """LRA Retrieval: ``inputs, inputs2 (b, max_length)`` byte ids (byte + 1; 0 pads) of the two
    documents, ``mask, mask2``, ``label (b,)`` (1 = one paper cites the other).

    Args:
        data_dir: where tensorflow-datasets keeps the prepared data (None: its default).
        manual_dir: a directory holding ``new_aan_pairs.train.tsv``, ``new_aan_pairs.eval.tsv``
            and ``new_aan_pairs.test.tsv`` (``lra_release/tsv_data/`` of LRA's release).
        max_length: each document is cut to this many bytes (LRA: 4000).
    """

    max_length: int = 4000

    builder_name: ClassVar[str] = "lra_retrieval"
    fields: ClassVar[tuple[SequenceField, ...]] = (SequenceField("tokens", "inputs", "mask"),
                                                   SequenceField("tokens2", "inputs2", "mask2"))
    token_offset: ClassVar[int] = BYTE_OFFSET
    vocab_size: ClassVar[int] = BYTE_VOCAB_SIZE
    num_classes: ClassVar[int] = 2

    @property
    def builder_config_name(self) -> str:
        return "aan_bytes"

    def check_files(self) -> None:
        root = pathlib.Path(self.manual_dir) if self.manual_dir is not None else None
        expected = {str(root / name) if root else name: root is not None and (root / name).is_file()
                    for name in PAIR_FILES.values()}
        if not all(expected.values()):
            raise missing_files(
                "Retrieval", expected,
                "LRA's release (lra_release.gz) holds them in lra_release/tsv_data/; pass that "
                "folder as Retrieval(manual_dir=...)" + ("" if root else " (manual_dir is None)"))

    def split_examples(self, download: Download) -> dict[str, Iterator[dict]]:
        root = pathlib.Path(self.manual_dir)
        return {split: read_pairs(root / name) for split, name in PAIR_FILES.items()}
