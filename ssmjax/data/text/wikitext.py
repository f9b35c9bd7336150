"""Corpora in the WikiText layout: locating the files of a release and splitting them into
articles (:mod:`ssmjax.data.text.articles` writes the articles as a tfds data set).

WikiText-103 (Merity, Xiong, Bradbury & Socher 2016) ships in three standard layouts, each with
a train, validation and test split:

- the tokenized release, ``wiki.{train,valid,test}.tokens`` (``wikitext-103/`` in its zip);
- the raw release, ``wiki.{train,valid,test}.raw`` (``wikitext-103-raw/``);
- the Hugging Face hub's parquet files, ``{train,validation,test}-*.parquet`` with a ``text``
  column of one line per row (``wikitext-103-v1/`` and ``wikitext-103-raw-v1/``).

Every article starts with a top-level heading line `` = Title = `` (section headings are
`` = = Section = = ``, `` = = = Subsection = = = ``, …); an article runs from its heading to the
line before the next top-level heading. Lines are kept as they are, except that a line of
only whitespace becomes ``"\\n"`` (the hub's files store such lines as empty rows), so the
three layouts of the same text give the same articles.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
from typing import Iterable, Iterator

SPLITS = ("train", "validation", "test")
RELEASES = ("tokens", "raw")
# The hub's WikiText-103 configurations, by release.
HUGGINGFACE_CONFIGS = {"tokens": "wikitext-103-v1", "raw": "wikitext-103-raw-v1"}

_FILE_SPLIT = {"train": "train", "validation": "valid", "test": "test"}
# Folders the standard archives extract to; files are also found directly in the data folder.
_RELEASE_FOLDERS = {"tokens": ("wikitext-103", "wikitext-103-v1"),
                    "raw": ("wikitext-103-raw", "wikitext-103-raw-v1")}
# A top-level heading: one '=' on each side (a section heading starts with '= =').
_ARTICLE_HEADING = re.compile(r"^ ?= (?!= )(.*\S) = ?$")


@dataclasses.dataclass(frozen=True)
class Article:
    """One document: its ``title`` (empty for text before the first heading) and ``text``,
    the heading line and the lines that follow it, newlines included."""

    title: str
    text: str


def article_title(line: str) -> str | None:
    """The title if ``line`` is a top-level heading `` = Title = ``, else None."""
    match = _ARTICLE_HEADING.match(line.rstrip("\n"))
    return match.group(1).strip() if match else None


def split_articles(lines: Iterable[str]) -> Iterator[Article]:
    """The articles of a split given as its lines (each ending in ``"\\n"``; one without it
    gets one). Whitespace-only lines before the first heading belong to no article."""
    title, body = None, []
    for line in lines:
        if not line.endswith("\n"):
            line += "\n"
        if not line.strip():
            line = "\n"
        heading = article_title(line)
        if heading is not None:
            if body and (title is not None or "".join(body).strip()):
                yield Article(title or "", "".join(body))
            title, body = heading, []
        body.append(line)
    if body and (title is not None or "".join(body).strip()):
        yield Article(title or "", "".join(body))


@dataclasses.dataclass(frozen=True)
class LocalFiles:
    """The files of one layout found in a folder: ``paths[split]`` lists the split's files
    in order (one text file, or the parquet shards sorted by name)."""

    layout: str  # "tokens", "raw" or "parquet"
    paths: dict[str, tuple[str, ...]]

    def lines(self, split: str) -> Iterator[str]:
        """The split's lines, in order."""
        for path in self.paths[split]:
            if self.layout == "parquet":
                yield from _parquet_lines(path)
            else:
                with open(path, encoding="utf-8") as file:
                    yield from file

    def fingerprint(self) -> str:
        """sha256 of the layout, the file names and their contents: changes when any file does."""
        digest = hashlib.sha256(self.layout.encode())
        for split in SPLITS:
            for path in self.paths[split]:
                digest.update(f"\0{split}\0{os.path.basename(path)}\0".encode())
                with open(path, "rb") as file:
                    for block in iter(lambda: file.read(1 << 24), b""):
                        digest.update(block)
        return digest.hexdigest()


def _parquet_lines(path: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    if "text" not in table.schema_arrow.names:
        raise ValueError(f"{path} has the columns {table.schema_arrow.names}, expected a 'text' "
                         "column of one line per row (the Hugging Face hub's WikiText layout)")
    for batch in table.iter_batches(columns=["text"], batch_size=8192):
        yield from (row if row is not None else "" for row in batch.column(0).to_pylist())


def expected_files(release: str) -> list[str]:
    """The names of the files that hold ``release``: the text files, then the parquet shards."""
    return ([f"wiki.{_FILE_SPLIT[split]}.{release}" for split in SPLITS]
            + [f"{split}-*.parquet" for split in SPLITS])


def find_local_files(data_dir: str, release: str, *, how_to_get: str = "") -> LocalFiles:
    """The files of ``release`` (``"tokens"`` or ``"raw"``) in ``data_dir`` or the folder its
    archive extracts to: the text files ``wiki.{train,valid,test}.<release>`` if all three are
    there, else the parquet shards ``{train,validation,test}-*.parquet``.

    Raises:
        ValueError: no complete layout is there; the message names the files expected, where
            they were looked for, and ``how_to_get`` them.
    """
    if release not in RELEASES:
        raise ValueError(f"release is {release!r}, expected one of {RELEASES}")
    folders = [data_dir] + [os.path.join(data_dir, sub) for sub in _RELEASE_FOLDERS[release]]
    found: list[str] = []
    for folder in folders:
        paths = {s: os.path.join(folder, f"wiki.{_FILE_SPLIT[s]}.{release}") for s in SPLITS}
        present = [s for s in SPLITS if os.path.isfile(paths[s])]
        if len(present) == len(SPLITS):
            return LocalFiles(release, {s: (paths[s],) for s in SPLITS})
        found += [paths[s] for s in present]
    for folder in folders:
        shards = {s: tuple(sorted(glob.glob(os.path.join(folder, f"{s}-*.parquet")))) for s in SPLITS}
        if all(shards.values()):
            return LocalFiles("parquet", shards)
        found += [path for split in SPLITS for path in shards[split]]
    missing = ", ".join(expected_files(release)[:3])
    partial = f" Found only: {', '.join(found)}." if found else ""
    raise ValueError(
        f"No WikiText-layout corpus ({release} release) in {data_dir}: expected the files "
        f"{missing} (or the Hugging Face hub's {', '.join(expected_files(release)[3:])} with a "
        f"'text' column) in {' or '.join(folders)}.{partial} {how_to_get}".rstrip())
