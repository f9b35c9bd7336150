"""The articles of a WikiText-layout corpus as a tensorflow-datasets data set: written once as
``array_record`` and read by index through tfds' random-access data source (no TensorFlow
needed).
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

import tensorflow_datasets as tfds

from ssmjax.data.text.wikitext import SPLITS, split_articles

LinesOfSplit = Mapping[str, Callable[[], Iterator[str]]]


class WikiTextArticles(tfds.core.GeneratorBasedBuilder):
    """tfds builder of a corpus in the WikiText layout, one example per article:
    ``{"title": Text, "text": Text}`` in the order of the files (shuffling disabled, so
    example ``i`` of a split is its ``i``-th article).

    Construct with ``lines``, a mapping from split name to a function returning the split's
    lines (:meth:`LocalFiles.lines` or :func:`huggingface_lines`), then
    ``download_and_prepare(file_format="array_record")`` and ``as_data_source(split)``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Articles split at top-level headings."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the WikiText files (wiki.{train,valid,test}.tokens, wiki.{train,valid,test}.raw, "
        "or the hub's {train,validation,test}-*.parquet) in the manual folder.")

    def __init__(self, *, lines: LinesOfSplit | None = None, **kwargs):
        self._split_lines = lines
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Articles of a WikiText-layout corpus (Merity et al. 2016).",
            features=tfds.features.FeaturesDict({"title": tfds.features.Text(),
                                                 "text": tfds.features.Text()}),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        if self._split_lines is None:
            raise ValueError("WikiTextArticles needs lines= (the split name -> lines function)")
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
        for index, article in enumerate(split_articles(self._split_lines[split]())):
            yield index, {"title": article.title, "text": article.text}


def prepare_articles(lines: LinesOfSplit, data_dir: str) -> dict[str, ArticleSource]:
    """Write the articles of every split to ``data_dir`` as array_record (once; later calls
    read what is there) and open them for random access."""
    builder = WikiTextArticles(lines=lines, data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")
    return {split: ArticleSource(builder.as_data_source(split)) for split in SPLITS}


class ArticleSource:
    """Random access to the articles of one prepared split: ``len(source)`` articles,
    ``source.texts(start, stop)`` their texts as str."""

    def __init__(self, data_source):
        self._rows = data_source

    def __len__(self) -> int:
        return len(self._rows)

    def texts(self, start: int = 0, stop: int | None = None) -> list[str]:
        stop = len(self) if stop is None else min(stop, len(self))
        if start >= stop:
            return []
        return [row["text"].decode("utf-8") for row in self._rows.__getitems__(range(start, stop))]

    def iter_texts(self, chunk: int = 1024) -> Iterator[str]:
        for start in range(0, len(self), chunk):
            yield from self.texts(start, start + chunk)

    def titles(self) -> list[str]:
        return [row["title"].decode("utf-8") for row in
                self._rows.__getitems__(range(len(self)))]


def huggingface_lines(config: str, data_dir: str) -> dict[str, Iterator[str]]:
    """The splits' lines of the hub's ``wikitext/<config>``, read through tfds' Hugging Face
    builder (needs the ``datasets`` package and the hub; prepared once into ``data_dir``)."""
    builder = tfds.builder(f"huggingface:wikitext/{config}", data_dir=data_dir,
                           file_format="array_record")
    builder.download_and_prepare()

    def lines(split: str) -> Iterator[str]:
        rows = builder.as_data_source(split)
        for start in range(0, len(rows), 4096):
            for row in rows.__getitems__(range(start, min(start + 4096, len(rows)))):
                text = row["text"]
                yield text.decode("utf-8") if isinstance(text, bytes) else text

    return {split: lines(split) for split in SPLITS}
