"""Size of a text corpus and its BPE token streams: documents, bytes, words and tokens per
split, and the unigram entropy of the train tokens (nats per token: the loss of the best
model that ignores context, the level a learning model must get below).

    python experiments/corpus_stats.py --name shakespeare --vocab-size 8192
    python experiments/corpus_stats.py --name wikitext103 --data-dir /data/wikitext-103 --vocab-size 16384

Prepares the corpus (``ssmjax.data.TextCorpus``; reused when already prepared), prints a
table and writes ``experiments/results/corpus_<name>_bpe<V>.json`` (``--results-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from ssmjax.data.text import TextCorpus, unigram_entropy
from ssmjax.data.text.wikitext import SPLITS, find_local_files

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def corpus_stats(corpus: TextCorpus) -> dict:
    """Per split: documents, bytes, words (whitespace-separated) of the files and BPE tokens of
    the stream (the EOS delimiters included); the train tokens' unigram entropy."""
    start = time.perf_counter()
    prepared = corpus.prepare()
    seconds = time.perf_counter() - start
    files = find_local_files(corpus.corpus_dir, corpus.release) if corpus.origin == "files" else None
    splits = {}
    for split in SPLITS:
        stream = prepared.streams[split]
        row = {"documents": stream.num_documents, "tokens": int(stream.tokens.size)}
        if files is not None:
            size = words = 0
            for line in files.lines(split):
                size += len(line.encode("utf-8"))
                words += len(line.split())
            row.update(bytes=size, words=words, bytes_per_token=size / stream.tokens.size)
        splits[split] = row
    return {"name": corpus.name, "release": corpus.release, "vocab_size": corpus.vocab_size,
            "tokenizer_vocab_size": prepared.tokenizer.get_vocab_size(),
            "token_dtype": prepared.streams["train"].tokens.dtype.name,
            "train_unigram_entropy_nats": unigram_entropy(prepared.streams["train"].tokens),
            "splits": splits, "prepare_seconds": seconds,
            "machine": f"{platform.machine()} {os.cpu_count()} cores"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="shakespeare")
    parser.add_argument("--data-dir")
    parser.add_argument("--release", default="tokens")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--results-dir", default=RESULTS_DIR)
    args = parser.parse_args(argv)
    corpus = TextCorpus(name=args.name, data_dir=args.data_dir, release=args.release,
                        vocab_size=args.vocab_size)
    stats = corpus_stats(corpus)
    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, f"corpus_{args.name}_bpe{args.vocab_size}.json")
    with open(path, "w") as file:
        json.dump(stats, file, indent=2)
    print(f"{args.name} ({args.release}), BPE vocabulary {stats['tokenizer_vocab_size']} "
          f"of {args.vocab_size}, tokens {stats['token_dtype']}; written to {path}")
    print(f"{'split':<12}{'documents':>10}{'bytes':>12}{'words':>11}{'tokens':>11}{'bytes/token':>13}")
    for split, row in stats["splits"].items():
        print(f"{split:<12}{row['documents']:>10}{row.get('bytes', '-'):>12}{row.get('words', '-'):>11}"
              f"{row['tokens']:>11}{row.get('bytes_per_token', float('nan')):>13.3f}")
    print(f"train unigram entropy: {stats['train_unigram_entropy_nats']:.4f} nats/token")
    return stats


if __name__ == "__main__":
    main()
