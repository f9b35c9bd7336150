"""LRA builders prepared from files the tests write in the released formats (ListOps TSVs, an
aclImdb/ tree, AAN pair TSVs) and from the generator: the right bytes, labels, lengths, masks
and cuts; named errors for missing files; seeded, resumable, sharded batches."""

import subprocess
import sys

import chex
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from ssmjax.data.lra import ListOps, Retrieval, TextClassification  # noqa: E402
from ssmjax.data.lra.listops import EOS, TOKEN_IDS, generate  # noqa: E402
from ssmjax.data.source import evaluation_batches  # noqa: E402

# A few expressions in the released spelling, their token ids (without <eos>) and labels.
LISTOPS_ROWS = [
    ("( ( ( [MAX 2 ) 9 ) ] )", "[MAX 2 9 ]", 9),
    ("( ( ( ( [MIN 4 ) ( ( ( [SM 5 ) 8 ) ] ) ) 7 ) ] )", "[MIN 4 [SM 5 8 ] 7 ]", 3),
    ("( ( ( [MED 1 ) 2 ) ] )", "[MED 1 2 ]", 1),
    ("( ( ( ( [SM 9 ) 9 ) 3 ) ] )", "[SM 9 9 3 ]", 1),
]


def ids(words):
    return [TOKEN_IDS[word] for word in words.split()]


def write_listops_release(folder, rows_by_file):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in rows_by_file.items():
        lines = ["Source\tTarget"] + [f"{source}\t{label}" for source, _, label in rows]
        (folder / name).write_text("\n".join(lines) + "\n")


def write_aclimdb(root, reviews):
    """``reviews[(split, label)]`` = list of (file name, text) under root/aclImdb."""
    for (split, label), files in reviews.items():
        folder = root / "aclImdb" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files:
            (folder / name).write_bytes(text.encode("utf-8"))


def write_aan(folder, pairs_by_file):
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in pairs_by_file.items():
        lines = [f"{label}\t{id1}\t{id2}\t{text1}\t{text2}" for label, id1, id2, text1, text2 in pairs]
        (folder / name).write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


def byte_ids(text, length):
    """What a byte-level task reads: UTF-8 bytes + 1, cut to length."""
    return [b + 1 for b in text.encode("utf-8")][:length]


def read_all(data):
    return data[np.arange(len(data))]


def assert_padded(inputs, mask, expected_rows):
    for row, expected in enumerate(expected_rows):
        length = len(expected)
        assert inputs[row, :length].tolist() == expected
        assert mask[row].tolist() == [True] * length + [False] * (inputs.shape[1] - length)
        assert not inputs[row, length:].any()


# ListOps --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def listops_release(tmp_path_factory):
    root = tmp_path_factory.mktemp("listops")
    write_listops_release(root / "release", {"basic_train.tsv": LISTOPS_ROWS,
                                             "basic_val.tsv": LISTOPS_ROWS[:2],
                                             "basic_test.tsv": LISTOPS_ROWS[2:]})
    return ListOps(data_dir=str(root / "tfds"), manual_dir=str(root / "release"), max_length=16)


def test_listops_release_files_read_as_s4_tokens_with_eos(listops_release):
    batch = read_all(listops_release.data("train"))
    chex.assert_shape([batch["inputs"], batch["mask"]], (4, 16))
    assert batch["inputs"].dtype == np.int32 and batch["mask"].dtype == bool
    assert batch["label"].dtype == np.int32 and batch["label"].tolist() == [9, 3, 1, 1]
    assert_padded(batch["inputs"], batch["mask"], [ids(words) + [EOS] for _, words, _ in LISTOPS_ROWS])
    assert read_all(listops_release.data("test"))["label"].tolist() == [1, 1]
    assert len(listops_release.data("validation")) == 2


def test_listops_cut_keeps_the_end_token(listops_release):
    import dataclasses

    short = dataclasses.replace(listops_release, max_length=4)  # same prepared data
    batch = read_all(short.data("train"))
    assert batch["inputs"][1].tolist() == ids("[MIN 4 [SM")[:3] + [EOS]
    assert batch["mask"].all()


def test_listops_generated_splits_are_consecutive_draws_of_the_seeded_stream(tmp_path):
    task = ListOps(data_dir=str(tmp_path), generation_seed=5, train_examples=6,
                   validation_examples=2, test_examples=3)
    expected = list(generate(11, seed=5))
    read = [read_all(task.data(split)) for split in ("train", "validation", "test")]
    inputs = np.concatenate([batch["inputs"] for batch in read])
    labels = np.concatenate([batch["label"] for batch in read])
    assert inputs.shape == (11, 2048)
    assert_padded(inputs, np.concatenate([batch["mask"] for batch in read]),
                  [tokens.tolist() + [EOS] for tokens, _ in expected])
    assert labels.tolist() == [label for _, label in expected]


# Text ---------------------------------------------------------------------------------------

REVIEWS = {
    ("train", "pos"): [("0_9.txt", "  A delight. Café crème, naïve & <br />brilliant!\n"),
                       ("10_8.txt", "Loved it " * 20)],
    ("train", "neg"): [("3_1.txt", "Dull 😴 from start to end.")],
    ("test", "pos"): [("1_10.txt", "Chef's kiss.")],
    ("test", "neg"): [("2_2.txt", "\tNope.  "), ("5_4.txt", "Ünbearable")],
}
TEXT_LENGTH = 64


def expected_reviews(split):
    """Path order (neg before pos, names sorted as strings), stripped, UTF-8 bytes + 1."""
    rows = []
    for label, name in enumerate(("neg", "pos")):
        for _, text in sorted(REVIEWS[(split, name)]):
            rows.append((byte_ids(text.strip(), TEXT_LENGTH), label))
    return rows


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("imdb")
    write_aclimdb(root / "files", REVIEWS)
    return root


def check_reviews(task):
    for split, stored in (("train", "train"), ("test", "test"), ("validation", "test")):
        batch = read_all(task.data(split))
        expected = expected_reviews(stored)
        assert batch["label"].tolist() == [label for _, label in expected]
        assert_padded(batch["inputs"], batch["mask"], [tokens for tokens, _ in expected])
    assert batch["inputs"].shape == (3, TEXT_LENGTH)


def test_text_reads_utf8_bytes_of_an_aclimdb_tree(text_files):
    task = TextClassification(data_dir=str(text_files / "tfds"), manual_dir=str(text_files / "files"),
                              max_length=TEXT_LENGTH)
    assert task.vocab_size == 257 and task.num_classes == 2
    check_reviews(task)
    long_review = read_all(task.data("train"))["mask"][2]  # "Loved it " × 20 = 180 bytes, cut
    assert long_review.all()


def test_text_downloads_the_archive_when_no_manual_dir(text_files, monkeypatch):
    import tensorflow_datasets as tfds

    from ssmjax.data.lra.text import IMDB_URL

    fetched = []

    def download_and_extract(self, url):
        fetched.append(url)
        return str(text_files / "files")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", download_and_extract)
    check_reviews(TextClassification(data_dir=str(text_files / "downloaded"), max_length=TEXT_LENGTH))
    assert fetched == [IMDB_URL]

    def offline(self, url):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", offline)
    with pytest.raises(FileNotFoundError, match="could not download .*no route to host.*manual_dir"):
        TextClassification(data_dir=str(text_files / "offline")).data("train")


# Retrieval ----------------------------------------------------------------------------------

PAIRS = [("1.0", "P01-1001", "W02-0202", 'On "parsing" with état-of-the-art CRFs.', "x" * 50),
         ("0", "A00-1000", "J99-9999", "Short.", "Tabs are field separators; quotes \" stay.")]
AAN_LENGTH = 40


@pytest.fixture(scope="module")
def retrieval(tmp_path_factory):
    root = tmp_path_factory.mktemp("aan")
    write_aan(root / "tsv_data", {"new_aan_pairs.train.tsv": PAIRS,
                                  "new_aan_pairs.eval.tsv": PAIRS[::-1],
                                  "new_aan_pairs.test.tsv": PAIRS[:1]})
    with open(root / "tsv_data" / "new_aan_pairs.eval.tsv", "a") as pairs:
        pairs.write("\n")  # a blank last line is no pair
    return Retrieval(data_dir=str(root / "tfds"), manual_dir=str(root / "tsv_data"),
                     max_length=AAN_LENGTH)


def test_retrieval_reads_both_documents_cut_to_max_length(retrieval):
    batch = read_all(retrieval.data("train"))
    assert set(batch) == {"inputs", "mask", "inputs2", "mask2", "label"}
    chex.assert_shape([batch["inputs"], batch["mask"], batch["inputs2"], batch["mask2"]],
                      (2, AAN_LENGTH))
    assert batch["label"].tolist() == [1, 0]
    assert_padded(batch["inputs"], batch["mask"], [byte_ids(p[3], AAN_LENGTH) for p in PAIRS])
    assert_padded(batch["inputs2"], batch["mask2"], [byte_ids(p[4], AAN_LENGTH) for p in PAIRS])
    assert read_all(retrieval.data("validation"))["label"].tolist() == [0, 1]


def test_malformed_lines_are_named(tmp_path):
    write_aan(tmp_path / "aan", {name: [("2", "a", "b", "c", "d")] for name in
                                 ("new_aan_pairs.train.tsv", "new_aan_pairs.eval.tsv",
                                  "new_aan_pairs.test.tsv")})
    with pytest.raises(ValueError, match="new_aan_pairs.train.tsv, line 1: expected 5 tab-separated"):
        Retrieval(data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "aan")).prepare()
    (tmp_path / "listops").mkdir()
    for name in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
        (tmp_path / "listops" / name).write_text("source\ttarget\n")
    with pytest.raises(ValueError, match="basic_train.tsv begins with 'source"):
        ListOps(data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "listops")).prepare()


# Missing files --------------------------------------------------------------------------------

def test_missing_files_are_named_with_where_to_put_them(tmp_path):
    (tmp_path / "basic_val.tsv").write_text("Source\tTarget\n")
    with pytest.raises(FileNotFoundError) as error:
        ListOps(data_dir=str(tmp_path), manual_dir=str(tmp_path)).data("train")
    message = str(error.value)
    assert "2 of them missing" in message and "listops-1000" in message and "manual_dir" in message
    for name in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
        assert str(tmp_path / name) in message
    assert "basic_val.tsv   <- missing" not in message

    with pytest.raises(FileNotFoundError) as error:
        TextClassification(manual_dir=str(tmp_path)).prepare()
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            assert f"{tmp_path}/aclImdb/{split}/{label}/*.txt   <- missing" in str(error.value)

    for manual_dir in (None, str(tmp_path)):
        with pytest.raises(FileNotFoundError, match="(?s)new_aan_pairs.train.tsv.*eval.*test.*"
                                                    "tsv_data.*Retrieval\\(manual_dir=...\\)"):
            Retrieval(manual_dir=manual_dir).prepare()


def test_bad_config_and_split_are_named(listops_release):
    with pytest.raises(ValueError, match="max_length is 0, expected a positive integer"):
        TextClassification(max_length=0)
    with pytest.raises(ValueError, match="train_examples is 0"):
        ListOps(train_examples=0)
    with pytest.raises(ValueError, match="split is 'dev', expected one of"):
        listops_release.data("dev")


# Batches ------------------------------------------------------------------------------------

def test_batches_seeded_resumable_and_sharded(retrieval):
    source = retrieval.source("train", 2, seed=3, process_index=0, process_count=1)
    batch = source.batch_at(7)
    assert {name: (value.dtype, value.shape) for name, value in batch.items()} == {
        "inputs": (np.int32, (2, AAN_LENGTH)), "mask": (bool, (2, AAN_LENGTH)),
        "inputs2": (np.int32, (2, AAN_LENGTH)), "mask2": (bool, (2, AAN_LENGTH)),
        "label": (np.int32, (2,))}
    restarted = retrieval.source("train", 2, seed=3, process_index=0, process_count=1)
    chex.assert_trees_all_equal(restarted.batch_at(7), batch)
    shards = [retrieval.source("train", 2, seed=3, process_index=p, process_count=2).batch_at(7)
              for p in range(2)]
    chex.assert_trees_all_equal({k: np.concatenate([s[k] for s in shards]) for k in batch}, batch)
    orders = {tuple(retrieval.source("train", 2, seed=s, process_index=0, process_count=1)
                    .batch_at(0)["label"]) for s in range(8)}
    assert orders == {(0, 1), (1, 0)}  # the seed shuffles


def test_evaluation_pass_counts_every_example_once(listops_release):
    batches = list(evaluation_batches(listops_release.data("train"), 3))
    weights = np.concatenate([batch["weight"] for batch in batches])
    labels = np.concatenate([batch["label"] for batch in batches])
    assert weights.tolist() == [1, 1, 1, 1, 0, 0]
    assert labels[weights == 1].tolist() == [9, 3, 1, 1]


def test_ssmjax_imports_without_the_data_extra():
    script = ("import sys; sys.modules['tensorflow_datasets'] = None\n"
              "import ssmjax, ssmjax.data\n"
              "from ssmjax.data import ListOps\n"
              "task = ListOps(train_examples=2)\n"
              "try:\n    task.prepare()\nexcept ImportError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert "pip install 'ssmjax[data]'" in result.stdout
