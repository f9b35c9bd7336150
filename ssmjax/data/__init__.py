"""Data: synthetic tasks generated on device, and the Long Range Arena tasks as
tensorflow-datasets builders read into seeded, resumable, shardable numpy batches (tfds-shaped
dict batches both)."""

from ssmjax.data.lra import ListOps, Retrieval, TextClassification
from ssmjax.data.synthetic import InductionHeads, SelectiveCopying, Task

__all__ = ["InductionHeads", "ListOps", "Retrieval", "SelectiveCopying", "Task",
           "TextClassification"]
