"""Small corpora written in WikiText-103's real layouts, for the text-data tests.

The tokens files look like the tokenized release: lines begin with a space, blank lines are
``" \\n"``, articles start with `` = Title = `` and hold `` = = Section = = `` headings, words
carry ``@-@``, ``<unk>`` and non-ASCII letters. The parquet files hold the same lines as the
Hugging Face hub stores them: one line per row in a ``text`` column, blank lines as ``""``.
"""

from __future__ import annotations

import os

import numpy as np

WORDS = ("the of and in to a was is for on as by with he that at from his it an were are which "
         "this be or has had first also their one its after new who they two her she been other "
         "when there all during into school time may years more most only over city some world "
         "would where later up such used many can state about national out known university "
         "@-@ <unk> , . ; Senjō café naïve 戦場 Zürich").split()

FILE_NAMES = {"train": "wiki.train", "validation": "wiki.valid", "test": "wiki.test"}
ARTICLES_PER_SPLIT = {"train": 24, "validation": 3, "test": 3}


def article_lines(rng: np.random.Generator, title: str) -> list[str]:
    """One article as tokens-file lines: heading, sections, paragraphs, blank lines."""
    lines = [" \n", f" = {title} = \n", " \n"]
    for section in range(int(rng.integers(1, 4))):
        if section:
            lines += [" \n", f" = = Section {section} of {title} = = \n", " \n"]
        for _ in range(int(rng.integers(1, 3))):
            words = rng.choice(WORDS, size=int(rng.integers(15, 50)))
            lines.append(" " + " ".join(words) + " . \n")
    return lines


def corpus_lines(seed: int = 0) -> dict[str, list[str]]:
    """The lines of each split; article titles are ``<split> article <i>``."""
    rng = np.random.default_rng(seed)
    return {split: [line for i in range(count)
                    for line in article_lines(rng, f"{split.capitalize()} article {i}")]
            for split, count in ARTICLES_PER_SPLIT.items()}


def write_text_files(folder, lines: dict[str, list[str]], suffix: str = "tokens") -> None:
    """``wiki.{train,valid,test}.<suffix>`` in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for split, split_lines in lines.items():
        with open(os.path.join(folder, f"{FILE_NAMES[split]}.{suffix}"), "w", encoding="utf-8") as f:
            f.writelines(split_lines)


def write_parquet_files(folder, lines: dict[str, list[str]], train_shards: int = 2) -> None:
    """The hub's layout: ``{train,validation,test}-0000i-of-0000n.parquet``, a ``text``
    column, blank lines as empty rows; train in ``train_shards`` shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    for split, split_lines in lines.items():
        rows = [line if line.strip() else "" for line in split_lines]
        shards = train_shards if split == "train" else 1
        for shard, part in enumerate(np.array_split(np.arange(len(rows)), shards)):
            table = pa.table({"text": [rows[i] for i in part]})
            pq.write_table(table, os.path.join(folder, f"{split}-{shard:05d}-of-{shards:05d}.parquet"))


def expected_articles(lines: list[str]) -> list[tuple[str, str]]:
    """(title, text) of each article as the tests expect it, from the generator's lines:
    a heading line starts an article; whitespace-only lines read as "\\n"."""
    articles: list[tuple[str, list[str]]] = []
    for line in lines:
        line = line if line.strip() else "\n"
        stripped = line.strip()
        if stripped.startswith("= ") and not stripped.startswith("= =") and stripped.endswith(" ="):
            articles.append((stripped[2:-2].strip(), []))
        if articles:
            articles[-1][1].append(line)
    return [(title, "".join(body)) for title, body in articles]
