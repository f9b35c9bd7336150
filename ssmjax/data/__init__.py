"""Data: synthetic tasks generated on device; the Long Range Arena tasks and text corpora as
tensorflow-datasets builders over generated or local files, read into seeded, resumable,
shardable numpy batches (tfds-shaped dicts of arrays)."""

from ssmjax.data.lra import ListOps, Retrieval, TextClassification
from ssmjax.data.packing import PackedRows, pack_sequences
from ssmjax.data.synthetic import InductionHeads, SelectiveCopying, Task
from ssmjax.data.text import TextCorpus, unigram_entropy

__all__ = ["InductionHeads", "ListOps", "PackedRows", "Retrieval", "SelectiveCopying", "Task",
           "TextClassification", "TextCorpus", "pack_sequences", "unigram_entropy"]
