"""Byte-level BPE: the same texts and size give a byte-identical tokenizer.json, in this
process and in another; every string round-trips; end of document is id 0."""

import hashlib
import pathlib
import subprocess
import sys

import pytest
from wikitext_files import corpus_lines

from ssmjax.data.text.bpe import END_OF_DOCUMENT, end_of_document_id, save_tokenizer, train_bpe


def training_texts():
    return ["".join(corpus_lines(seed)["train"]) for seed in range(3)]


def test_training_is_deterministic_across_runs_and_processes(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    save_tokenizer(train_bpe(training_texts(), 400), str(first))
    save_tokenizer(train_bpe(training_texts(), 400), str(second))
    assert first.read_bytes() == second.read_bytes()
    # Another interpreter: hash maps there are seeded differently.
    script = ("import sys, hashlib; sys.path.insert(0, sys.argv[1]);"
              "from wikitext_files import corpus_lines; from ssmjax.data.text.bpe import train_bpe;"
              "texts = [''.join(corpus_lines(s)['train']) for s in range(3)];"
              "print(hashlib.sha256(train_bpe(texts, 400).to_str(pretty=True).encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", script, str(pathlib.Path(__file__).parent)],
                         check=True, capture_output=True, text=True).stdout.strip()
    assert out == hashlib.sha256(first.read_bytes()).hexdigest()
    assert train_bpe(training_texts(), 300).to_str() != train_bpe(training_texts(), 400).to_str()


def test_every_string_round_trips_and_end_of_document_is_id_0():
    tokenizer = train_bpe(training_texts(), 400)
    assert tokenizer.get_vocab_size() == 400
    assert end_of_document_id(tokenizer) == 0 and tokenizer.id_to_token(0) == END_OF_DOCUMENT
    for text in (" = Senjō no Valkyria = \n", "naïve café 戦場 🤗\t\n\n  x", "\x00\x7f", "",
                 "never seen before: Ωμέγα"):
        ids = tokenizer.encode(text).ids
        assert tokenizer.decode(ids) == text
        assert 0 not in ids or END_OF_DOCUMENT in text


def test_vocab_size_below_the_byte_alphabet_is_refused():
    with pytest.raises(ValueError, match="vocab_size is 256, expected an integer >= 257"):
        train_bpe(["abc"], 256)
