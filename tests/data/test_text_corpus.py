"""TextCorpus end to end on WikiText-layout fixture files: the token streams decode back to the
articles; windows score every token once; batches are the same at the same step whatever came
before, and process shards tile them; the cache is reused, and remade when the source files
or the tokenizer change; a missing corpus says where to put which files."""

import collections
import dataclasses
import os

import numpy as np
import pytest
from wikitext_files import corpus_lines, expected_articles, write_parquet_files, write_text_files

from ssmjax.data.source import WEIGHT, evaluation_batches
from ssmjax.data.text import TextCorpus, TokenWindows, unigram_entropy
from ssmjax.data.text.bpe import save_tokenizer, train_bpe
from ssmjax.data.text.tokens import token_dtype
from ssmjax.data.text.wikitext import SPLITS

VOCAB, LENGTH = 300, 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wikitext")
    write_text_files(folder, corpus_lines())
    return TextCorpus(data_dir=str(folder), vocab_size=VOCAB, sequence_length=LENGTH)


def test_token_streams_decode_to_the_articles(corpus):
    prepared = corpus.prepare()
    eos = prepared.end_of_document
    lines = corpus_lines()
    for split in SPLITS:
        stream = prepared.streams[split]
        articles = expected_articles(lines[split])
        assert stream.tokens.dtype == np.uint16 and isinstance(stream.tokens, np.memmap)
        assert stream.num_documents == len(articles)
        np.testing.assert_array_equal(stream.tokens[stream.document_starts], eos)
        assert stream.document_starts[-1] == len(stream.tokens) - 1
        assert int((np.asarray(stream.tokens) == eos).sum()) == len(articles) + 1
        for j, (_, text) in enumerate(articles):
            assert prepared.tokenizer.decode(stream.document(j).tolist()) == text
    assert prepared.tokenizer.get_vocab_size() <= VOCAB
    assert token_dtype(1 << 16) == np.uint16 and token_dtype((1 << 16) + 1) == np.uint32


def test_windows_score_every_token_once(corpus):
    tokens = corpus.tokens("validation").tokens
    train, evaluation = corpus.examples("validation", complete=False), corpus.evaluation_data("validation")
    assert len(train) == (len(tokens) - 1) // LENGTH
    assert len(evaluation) == -(-(len(tokens) - 1) // LENGTH)
    whole = train[np.arange(len(train))]
    assert whole["loss_mask"].all()
    np.testing.assert_array_equal(whole["inputs"][:, 1:], whole["targets"][:, :-1])
    np.testing.assert_array_equal(whole["targets"].reshape(-1), tokens[1:1 + len(train) * LENGTH])
    batches = list(evaluation_batches(evaluation, 5))
    scored = np.concatenate([b["targets"][b[WEIGHT] == 1][b["loss_mask"][b[WEIGHT] == 1]]
                             for b in batches])
    np.testing.assert_array_equal(scored, tokens[1:])
    last = evaluation[np.array([len(evaluation) - 1])]
    assert last["loss_mask"].sum() == (len(tokens) - 1) - (len(evaluation) - 1) * LENGTH
    assert {k: (v.shape, v.dtype) for k, v in last.items()} == {
        "inputs": ((1, LENGTH), np.int32), "targets": ((1, LENGTH), np.int32),
        "loss_mask": ((1, LENGTH), np.bool_)}


def test_resumed_source_sees_the_same_batches_and_shards_tile_them(corpus):
    source = corpus.source("train", 4, seed=3, process_index=0, process_count=1)
    assert source.steps_per_epoch >= 3
    steps = range(2 * source.steps_per_epoch + 1)  # across an epoch boundary
    straight = [source.batch_at(step) for step in steps]
    resumed = dataclasses.replace(corpus).source("train", 4, seed=3, process_index=0,
                                                 process_count=1)
    middle = len(steps) // 2
    for step in list(steps)[middle:]:
        for key, value in resumed.batch_at(step).items():
            np.testing.assert_array_equal(value, straight[step][key])
    for step, batch in resumed.batches(middle, prefetch=2):
        np.testing.assert_array_equal(batch["inputs"], straight[step]["inputs"])
        if step == len(steps) - 1:
            break
    # An epoch reads each whole window once (its rows are a sub-multiset of all windows).
    epoch = np.concatenate([b["inputs"] for b in straight[:source.steps_per_epoch]])
    windows = corpus.examples("train", complete=False)
    every = collections.Counter(r.tobytes() for r in windows[np.arange(len(windows))]["inputs"])
    read = collections.Counter(row.tobytes() for row in epoch)
    assert not read - every and sum(read.values()) == len(windows) // 4 * 4
    other_seed = corpus.source("train", 4, seed=4, process_index=0, process_count=1)
    assert not np.array_equal(other_seed.batch_at(0)["inputs"], straight[0]["inputs"])
    for step in (0, source.steps_per_epoch + 1):
        parts = [corpus.source("train", 4, seed=3, process_index=p, process_count=2).batch_at(step)
                 for p in range(2)]
        for key in straight[step]:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]),
                                          straight[step][key])


def test_packed_source_keeps_documents_apart(corpus):
    packed = dataclasses.replace(corpus, pack=True)
    stream = packed.tokens("train")
    eos = packed.prepare().end_of_document
    rows = packed.evaluation_data("train")
    batch = rows[np.arange(len(rows))]
    assert set(batch) == {"inputs", "targets", "loss_mask", "segment_ids"}
    # Every document's tokens and its closing EOS are scored once: the stream after its start.
    np.testing.assert_array_equal(np.sort(batch["targets"][batch["loss_mask"]]),
                                  np.sort(np.asarray(stream.tokens[1:])))
    # An EOS only opens or closes a segment: no segment runs from one document into the next.
    segments_seen = 0
    for inputs, segments in zip(batch["inputs"], batch["segment_ids"]):
        for segment in np.unique(segments[segments != 0]):
            piece = inputs[segments == segment]
            assert not np.any(piece[1:-1] == eos)
            segments_seen += 1
    assert segments_seen > stream.num_documents  # long documents were split into pieces
    training = packed.source("train", 2, seed=0, process_index=0, process_count=1)
    assert training.batch_at(0)["segment_ids"].shape == (2, LENGTH)


def test_cache_is_reused(corpus, monkeypatch):
    corpus.prepare()
    import ssmjax.data.text.corpus as corpus_module

    def refuse(*args, **kwargs):
        raise AssertionError("prepared data was made again")

    monkeypatch.setattr(corpus_module, "train_bpe", refuse)
    monkeypatch.setattr(corpus_module, "write_token_stream", refuse)
    prepared = corpus.prepare()
    assert prepared.streams["test"].tokens.size > 0


def test_cache_is_remade_when_the_source_or_the_tokenizer_changes(tmp_path):
    lines = corpus_lines()
    write_text_files(tmp_path, lines)
    corpus = TextCorpus(data_dir=str(tmp_path), vocab_size=VOCAB, sequence_length=LENGTH)
    before = corpus.prepare()
    with open(tmp_path / "wiki.test.tokens", "a", encoding="utf-8") as file:
        file.write(" \n = Appended article = \n \n the new text . \n")
    after = corpus.prepare()
    assert os.path.dirname(after.tokenizer_path) != os.path.dirname(before.tokenizer_path)
    assert after.streams["test"].num_documents == before.streams["test"].num_documents + 1
    assert after.tokenizer.decode(after.streams["test"].document(3).tolist()).startswith(
        " = Appended article = ")
    # A tokenizer.json replaced by another one: the token streams follow it.
    other = train_bpe(["".join(lines["train"])], 280)
    save_tokenizer(other, after.tokenizer_path)
    remade = corpus.prepare()
    assert remade.tokenizer.get_vocab_size() == 280
    expected = [0] + other.encode(expected_articles(lines["validation"])[0][1]).ids + [0]
    np.testing.assert_array_equal(
        remade.streams["validation"].tokens[:len(expected)], expected)
    assert not np.array_equal(remade.streams["validation"].tokens[:len(expected)],
                              after.streams["validation"].tokens[:len(expected)])


def test_parquet_and_tokens_layouts_give_the_same_streams(tmp_path, corpus):
    write_parquet_files(tmp_path / "wikitext-103-v1", corpus_lines())
    from_parquet = TextCorpus(data_dir=str(tmp_path), vocab_size=VOCAB,
                              sequence_length=LENGTH).prepare()
    from_tokens = corpus.prepare()
    with open(from_parquet.tokenizer_path, "rb") as a, open(from_tokens.tokenizer_path, "rb") as b:
        assert a.read() == b.read()
    for split in SPLITS:
        np.testing.assert_array_equal(from_parquet.streams[split].tokens,
                                      from_tokens.streams[split].tokens)


def test_huggingface_origin_reads_the_hub_rows_through_tfds(tmp_path, corpus, monkeypatch):
    from ssmjax.data.text import articles

    lines = corpus_lines()
    asked = {}

    class HubBuilder:  # what tfds.builder("huggingface:…") gives: rows of one line each
        def download_and_prepare(self):
            asked["prepared"] = True

        def as_data_source(self, split):
            rows = [{"text": (line if line.strip() else "").encode()} for line in lines[split]]

            class Rows(list):
                def __getitems__(self, indices):
                    return [self[i] for i in indices]
            return Rows(rows)

    def builder(name, **kwargs):
        asked["name"], asked["kwargs"] = name, kwargs
        return HubBuilder()

    monkeypatch.setattr(articles.tfds, "builder", builder)
    hub = TextCorpus(origin="huggingface", data_dir=str(tmp_path), vocab_size=VOCAB,
                     sequence_length=LENGTH).prepare()
    assert asked["name"] == "huggingface:wikitext/wikitext-103-v1" and asked["prepared"]
    for split in SPLITS:
        np.testing.assert_array_equal(hub.streams[split].tokens,
                                      corpus.prepare().streams[split].tokens)


def test_end_of_document_text_inside_a_document_is_text(tmp_path):
    lines = corpus_lines()
    lines["test"] = [" = Tricky = \n", " it ends here <|endoftext|> or not . \n"]
    write_text_files(tmp_path, lines)
    prepared = TextCorpus(data_dir=str(tmp_path), vocab_size=VOCAB).prepare()
    stream = prepared.streams["test"]
    assert int((np.asarray(stream.tokens) == 0).sum()) == 2  # the two delimiters only
    assert "<|endoftext|>" in prepared.tokenizer.decode(stream.document(0).tolist())


def test_missing_corpus_says_which_files_and_how(tmp_path):
    with pytest.raises(ValueError) as error:
        TextCorpus(name="shakespeare", data_dir=str(tmp_path / "none")).prepare()
    assert "wiki.train.tokens" in str(error.value) and "experiments/fetch_corpus.py" in str(error.value)
    with pytest.raises(ValueError, match="WikiText-103"):
        TextCorpus(data_dir=str(tmp_path)).prepare()


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="name is 'wiki'"):
        TextCorpus(name="wiki")
    with pytest.raises(ValueError, match="release is 'clean'"):
        TextCorpus(release="clean")
    with pytest.raises(ValueError, match="origin is 'huggingface' for name 'shakespeare'"):
        TextCorpus(name="shakespeare", origin="huggingface")
    with pytest.raises(ValueError, match="vocab_size is 100"):
        TextCorpus(vocab_size=100)
    with pytest.raises(ValueError, match="sequence_length is 1, expected an integer >= 2 with pack"):
        TextCorpus(sequence_length=1, pack=True)
    with pytest.raises(ValueError, match="split is 'valid'"):
        TextCorpus().tokens("valid")
    with pytest.raises(ValueError, match="fewer than sequence_length"):
        TokenWindows(np.zeros(4, np.uint16), 4)


def test_unigram_entropy_against_the_definition():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=10_000).astype(np.uint16)
    p = np.bincount(tokens) / tokens.size
    expected = -sum(q * np.log(q) for q in p if q > 0)
    assert abs(unigram_entropy(tokens) - expected) < 1e-12
    assert unigram_entropy(np.full(7, 3, np.uint16)) == 0.0


def test_shards_require_a_batch_divisible_by_processes(corpus):
    with pytest.raises(ValueError, match="multiple of the 3 JAX processes"):
        corpus.source("train", 4, process_index=0, process_count=3)

