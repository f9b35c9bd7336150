"""WikiText layouts: the tokens, raw and parquet files of the real releases give the right
articles in the right splits; the tfds builder writes and reads them back in order; a missing
file is an error that names it."""

import os

import pytest
from wikitext_files import corpus_lines, expected_articles, write_parquet_files, write_text_files

from ssmjax.data.text.wikitext import SPLITS, article_title, find_local_files, split_articles


def articles_of(files, split):
    return [(a.title, a.text) for a in split_articles(files.lines(split))]


def test_headings_start_articles_and_sections_do_not():
    assert article_title(" = Valkyria Chronicles III = \n") == "Valkyria Chronicles III"
    assert article_title("= Tower Building of the Little Rock Arsenal =") == \
        "Tower Building of the Little Rock Arsenal"
    for line in (" = = Gameplay = = \n", " = = = Reception = = = \n", " a = b = c \n", " \n",
                 " == x == \n"):
        assert article_title(line) is None
    lines = [" \n", " = A = \n", " \n", " = = S = = \n", " x . \n", " \n", " = B = \n", " y"]
    assert [(a.title, a.text) for a in split_articles(lines)] == [
        ("A", " = A = \n\n = = S = = \n x . \n\n"), ("B", " = B = \n y\n")]


def test_text_before_the_first_heading_is_an_untitled_article():
    articles = list(split_articles([" preface \n", " = A = \n", " body \n"]))
    assert [(a.title, a.text) for a in articles] == [("", " preface \n"), ("A", " = A = \n body \n")]


@pytest.mark.parametrize("suffix, release", [("tokens", "tokens"), ("raw", "raw")])
def test_text_files_give_the_articles_of_each_split(tmp_path, suffix, release):
    lines = corpus_lines()
    write_text_files(tmp_path, lines, suffix)
    files = find_local_files(str(tmp_path), release)
    assert files.layout == suffix
    for split in SPLITS:
        assert articles_of(files, split) == expected_articles(lines[split])
    assert [t for t, _ in articles_of(files, "test")] == [f"Test article {i}" for i in range(3)]


def test_parquet_shards_give_the_same_articles_as_the_tokens_files(tmp_path):
    lines = corpus_lines()
    write_text_files(tmp_path / "text", lines)
    write_parquet_files(tmp_path / "hub" / "wikitext-103-v1", lines, train_shards=3)
    from_text = find_local_files(str(tmp_path / "text"), "tokens")
    from_parquet = find_local_files(str(tmp_path / "hub"), "tokens")  # found in the subfolder
    assert from_parquet.layout == "parquet" and len(from_parquet.paths["train"]) == 3
    for split in SPLITS:
        assert articles_of(from_parquet, split) == articles_of(from_text, split)


def test_archive_folder_is_searched(tmp_path):
    write_text_files(tmp_path / "wikitext-103-raw", corpus_lines(), "raw")
    files = find_local_files(str(tmp_path), "raw")
    assert files.paths["validation"] == (str(tmp_path / "wikitext-103-raw" / "wiki.valid.raw"),)


def test_missing_file_names_what_is_expected_and_where(tmp_path):
    lines = corpus_lines()
    write_text_files(tmp_path, lines)
    os.remove(tmp_path / "wiki.valid.tokens")
    with pytest.raises(ValueError) as error:
        find_local_files(str(tmp_path), "tokens", how_to_get="Run the fetch script.")
    message = str(error.value)
    for expected in ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens",
                     "validation-*.parquet", str(tmp_path), "Found only",
                     "Run the fetch script."):
        assert expected in message
    with pytest.raises(ValueError, match="release is 'wiki'"):
        find_local_files(str(tmp_path), "wiki")


def test_parquet_without_a_text_column_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split in SPLITS:
        pq.write_table(pa.table({"line": ["x"]}), tmp_path / f"{split}-00000-of-00001.parquet")
    files = find_local_files(str(tmp_path), "tokens")
    with pytest.raises(ValueError, match="expected a 'text' column"):
        list(files.lines("train"))


def test_tfds_builder_writes_array_record_and_reads_the_articles_in_order(tmp_path):
    from ssmjax.data.text.articles import prepare_articles

    lines = corpus_lines()
    write_text_files(tmp_path / "files", lines)
    files = find_local_files(str(tmp_path / "files"), "tokens")
    articles = prepare_articles({s: (lambda s=s: files.lines(s)) for s in SPLITS},
                                str(tmp_path / "tfds"))
    written = [name for _, _, names in os.walk(tmp_path / "tfds") for name in names]
    assert any(".array_record-" in name for name in written)
    for split in SPLITS:
        expected = expected_articles(lines[split])
        assert len(articles[split]) == len(expected)
        assert articles[split].titles() == [title for title, _ in expected]
        assert list(articles[split].iter_texts(chunk=5)) == [text for _, text in expected]
        assert articles[split].texts(2, 3) == [expected[2][1]]
