"""Data: synthetic tasks generated on device, and text corpora read from files into host
batches (tfds-shaped dicts of arrays)."""

from ssmjax.data.packing import PackedRows, pack_sequences
from ssmjax.data.synthetic import InductionHeads, SelectiveCopying, Task
from ssmjax.data.text import TextCorpus, unigram_entropy

__all__ = ["InductionHeads", "PackedRows", "SelectiveCopying", "Task", "TextCorpus",
           "pack_sequences", "unigram_entropy"]
