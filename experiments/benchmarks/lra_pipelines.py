"""Throughput of the LRA data pipelines on the host: examples/s and tokens/s of training batches
read at the paper's batch sizes (SeRpEnt Table 3: ListOps 16, Text 16, Retrieval 64), through
the tensorflow-datasets array_record route the tasks use and, as the peer, a plain numpy memmap
of the same tokenised split; and the time to generate and prepare ListOps.

* ListOps: the full generated data set (96,000 / 2,000 / 2,000 expressions), generated once
  alone (the generator's time) and once inside preparation (generation + writing).
* Text and Retrieval read fixture files written here in the released formats (an ``aclImdb/``
  tree; ``new_aan_pairs.*.tsv``), since this machine has neither archive; their sizes are
  stated in the JSON.

A batch is ``BatchSource.batch_at(step)`` over shuffled steps (random access into the split);
the memmap peer returns the same arrays (checked) from ``(examples, max_length)`` uint8 files.

    python experiments/benchmarks/lra_pipelines.py [--listops-examples 96000 2000 2000]

Prints a table last and writes ``experiments/results/lra_pipelines_cpu.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time
from importlib import metadata

import numpy as np

from ssmjax.data.lra import FileTask, ListOps, Retrieval, TextClassification
from ssmjax.data.lra.listops import generate
from ssmjax.data.source import BatchSource

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
BATCH_SIZES = {"ListOps": 16, "Text": 16, "Retrieval": 64}  # SeRpEnt, Table 3
WORDS = np.array("the a film movie was is and of to it plot acting great bad really story "
                 "characters but this that one scene director , . ! ?".split())


def random_text(rng: np.random.Generator, size: int) -> str:
    """About ``size`` bytes of words (the content does not change reading speed)."""
    words = WORDS[rng.integers(0, len(WORDS), max(1, size // 5))]
    return " ".join(words)[:size]


def write_aclimdb(root: pathlib.Path, reviews_per_split: int, rng: np.random.Generator) -> dict:
    """An ``aclImdb/{train,test}/{pos,neg}`` tree; review bytes log-normal around IMDB's
    (median 950, σ 0.75: mean ≈ 1,260)."""
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for index in range(reviews_per_split // 2):
                size = int(rng.lognormal(np.log(950), 0.75))
                (folder / f"{index}_{rng.integers(1, 11)}.txt").write_text(random_text(rng, size))
    return dict(reviews_per_split=reviews_per_split, review_bytes="lognormal, median 950, sigma 0.75")


def write_aan(root: pathlib.Path, pairs: dict[str, int], rng: np.random.Generator) -> dict:
    """``new_aan_pairs.{train,eval,test}.tsv``; document bytes log-normal (median 3,000,
    σ 0.8: mean ≈ 4,100), an assumption: the release's distribution is not on this machine."""
    root.mkdir(parents=True)
    for name, count in pairs.items():
        with open(root / f"new_aan_pairs.{name}.tsv", "w") as out:
            for index in range(count):
                texts = [random_text(rng, int(rng.lognormal(np.log(3000), 0.8))) for _ in range(2)]
                out.write(f"{rng.integers(0, 2)}.0\tP{index:05d}\tW{index:05d}\t{texts[0]}\t{texts[1]}\n")
    return dict(pairs=pairs, document_bytes="lognormal, median 3000, sigma 0.8 (assumed)")


class MemmapSplit:
    """The peer: a split's stored sequences cut to ``max_length`` in ``(n, max_length)`` uint8
    memmaps with their lengths and labels, padded like :class:`TokenSequences`."""

    def __init__(self, task: FileTask, split: str, folder: pathlib.Path, chunk: int = 2048):
        records = task.prepare().as_data_source(split=task.stored_split(split))
        self.task, self.count = task, len(records)
        self.room = task.max_length - (task.end_token is not None)
        folder.mkdir(parents=True)
        for field in task.fields:
            tokens = np.lib.format.open_memmap(folder / f"{field.stored}.npy", "w+", np.uint8,
                                               (self.count, task.max_length))
            lengths = np.zeros(self.count, np.int64)
            for start in range(0, self.count, chunk):
                for row, record in enumerate(records.__getitems__(
                        list(range(start, min(start + chunk, self.count)))), start):
                    kept = record[field.stored][:self.room]
                    tokens[row, :kept.shape[0]] = kept
                    lengths[row] = kept.shape[0]
            tokens.flush()
            np.save(folder / f"{field.stored}_lengths.npy", lengths)
        labels = [record["label"] for start in range(0, self.count, chunk)
                  for record in records.__getitems__(list(range(start, min(start + chunk, self.count))))]
        np.save(folder / "label.npy", np.asarray(labels, np.int32))
        self.tokens = {f.stored: np.load(folder / f"{f.stored}.npy", mmap_mode="r") for f in task.fields}
        self.lengths = {f.stored: np.load(folder / f"{f.stored}_lengths.npy") for f in task.fields}
        self.labels = np.load(folder / "label.npy")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        batch = {}
        rows = np.arange(len(indices))
        for field in self.task.fields:
            lengths = self.lengths[field.stored][indices]
            real = np.arange(self.task.max_length) < lengths[:, None]
            ids = np.where(real, self.tokens[field.stored][indices].astype(np.int32)
                           + self.task.token_offset, 0)
            if self.task.end_token is not None:
                ids[rows, lengths] = self.task.end_token
                real[rows, lengths] = True
            batch[field.inputs], batch[field.mask] = ids, real
        batch["label"] = self.labels[indices]
        return batch


def read_speed(data, task: FileTask, batch_size: int, steps: int, repeats: int) -> dict:
    """Median over ``repeats`` runs of ``steps`` shuffled training batches."""
    source = BatchSource(data, batch_size, seed=0, process_index=0, process_count=1)
    for step in range(3):  # open files, warm caches
        source.batch_at(step)
    seconds, real_tokens = [], 0
    for repeat in range(repeats):
        first = 3 + repeat * steps
        start = time.perf_counter()
        batches = [source.batch_at(step) for step in range(first, first + steps)]
        seconds.append(time.perf_counter() - start)
        real_tokens = sum(int(batch[field.mask].sum()) for batch in batches for field in task.fields)
    elapsed = statistics.median(seconds)
    padded = steps * batch_size * task.max_length * len(task.fields)
    return dict(examples_per_s=steps * batch_size / elapsed, real_tokens_per_s=real_tokens / elapsed,
                padded_tokens_per_s=padded / elapsed, seconds=seconds, steps=steps)


def folder_bytes(folder: pathlib.Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure(name: str, task: FileTask, work: pathlib.Path, steps: int, repeats: int) -> dict:
    start = time.perf_counter()
    task.prepare()
    prepare_s = time.perf_counter() - start
    data = task.data("train")
    batch_size = BATCH_SIZES[name]
    start = time.perf_counter()
    peer = MemmapSplit(task, "train", work / f"{name}_memmap")
    memmap_build_s = time.perf_counter() - start
    probe = np.arange(0, len(data), max(1, len(data) // 32))
    expected, got = data[probe], peer[probe]
    assert all(np.array_equal(expected[key], got[key]) for key in expected), "peer differs"
    row = dict(task=name, config=dataclasses.asdict(task), batch_size=batch_size,
               train_examples=len(data), prepare_s=prepare_s,
               tfds_bytes=folder_bytes(pathlib.Path(task.data_dir)), memmap_bytes=folder_bytes(
                   work / f"{name}_memmap"), memmap_build_s=memmap_build_s,
               tfds=read_speed(data, task, batch_size, steps, repeats),
               memmap=read_speed(peer, task, batch_size, steps, repeats))
    row["memmap_over_tfds"] = row["memmap"]["examples_per_s"] / row["tfds"]["examples_per_s"]
    print(f"{name}: prepared in {prepare_s:.1f} s; tfds {row['tfds']['examples_per_s']:,.0f} ex/s, "
          f"memmap {row['memmap']['examples_per_s']:,.0f} ex/s", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listops-examples", type=int, nargs=3, default=[96_000, 2_000, 2_000],
                        metavar=("TRAIN", "VALIDATION", "TEST"))
    parser.add_argument("--reviews", type=int, default=25_000, help="Text fixture reviews per split")
    parser.add_argument("--pairs", type=int, nargs=3, default=[16_384, 1_024, 1_024],
                        metavar=("TRAIN", "EVAL", "TEST"), help="Retrieval fixture pairs per file")
    parser.add_argument("--steps", type=int, default=200, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", type=pathlib.Path, default=None,
                        help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "lra_pipelines_cpu.json")
    args = parser.parse_args()

    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="lra_pipelines_"))
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    try:
        train, validation, test = args.listops_examples
        start = time.perf_counter()
        for _ in generate(train + validation + test, seed=0):
            pass
        generation_s = time.perf_counter() - start
        print(f"ListOps: generated {train + validation + test:,} expressions in {generation_s:.1f} s",
              flush=True)
        listops = ListOps(data_dir=str(work / "listops_tfds"), train_examples=train,
                          validation_examples=validation, test_examples=test)
        rows = [measure("ListOps", listops, work, args.steps, args.repeats)]
        rows[0]["generation_s"] = generation_s

        start = time.perf_counter()
        text_fixture = write_aclimdb(work / "imdb", args.reviews, rng)
        text_fixture["write_s"] = time.perf_counter() - start
        text = TextClassification(data_dir=str(work / "text_tfds"), manual_dir=str(work / "imdb"))
        rows.append(measure("Text", text, work, args.steps, args.repeats))
        rows[-1]["fixture"] = text_fixture

        pair_counts = dict(zip(("train", "eval", "test"), args.pairs))
        start = time.perf_counter()
        aan_fixture = write_aan(work / "aan", pair_counts, rng)
        aan_fixture["write_s"] = time.perf_counter() - start
        retrieval = Retrieval(data_dir=str(work / "retrieval_tfds"), manual_dir=str(work / "aan"))
        rows.append(measure("Retrieval", retrieval, work, max(1, args.steps // 4), args.repeats))
        rows[-1]["fixture"] = aan_fixture
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    versions = {name: metadata.version(name) for name in ("tensorflow-datasets", "array_record",
                                                           "numpy")}
    result = dict(
        machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, shared with other work",
        python=sys.version.split()[0], versions=versions, load_average_before=load_before,
        load_average_after=os.getloadavg(),
        notes=("Text and Retrieval read fixture files in the released formats written by this "
               "script (sizes under each row's 'fixture'); ListOps is the full generated set. "
               "Both routes read files just written, from the page cache. Tokens/s counts real "
               "tokens (mask) and padded positions of every sequence field."),
        rows=rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    print(f"\nLRA pipelines, {result['machine']}, Python {result['python']}, tensorflow-datasets "
          f"{versions['tensorflow-datasets']}, array_record {versions['array_record']}; median of "
          f"{args.repeats} runs; load average {load_before[0]:.1f} → "
          f"{result['load_average_after'][0]:.1f}")
    print(f"ListOps generation of {sum(args.listops_examples):,} expressions: {generation_s:.1f} s")
    header = ("task", "batch", "train examples", "prepare s", "tfds ex/s", "tfds real tok/s",
              "memmap ex/s", "memmap / tfds", "tfds MiB", "memmap MiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print(f"| {row['task']} | {row['batch_size']} | {row['train_examples']:,} | "
              f"{row['prepare_s']:.1f} | {row['tfds']['examples_per_s']:,.0f} | "
              f"{row['tfds']['real_tokens_per_s']:,.0f} | {row['memmap']['examples_per_s']:,.0f} | "
              f"{row['memmap_over_tfds']:.1f}× | {row['tfds_bytes'] / 2**20:,.0f} | "
              f"{row['memmap_bytes'] / 2**20:,.0f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
