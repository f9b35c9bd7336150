"""Long Range Arena data (Tay et al. 2021) for the sequence tasks SeRpEnt reports (ListOps,
Text, Retrieval): frozen configs that prepare tensorflow-datasets builders from generated data
or local files and read them into seeded, resumable, shardable numpy batches.

    task = ListOps(data_dir="/data/tfds")           # generated; manual_dir=... for LRA's files
    train = task.source("train", 16, seed=0)         # BatchSource: train.batch_at(step)
    for batch in evaluation_batches(task.data("test"), 16): ...

Preparing and reading need the ``data`` extra (``pip install ssmjax[data]``); importing this
package does not.
"""

from ssmjax.data.lra.listops import ListOps
from ssmjax.data.lra.retrieval import Retrieval
from ssmjax.data.lra.tasks import FileTask, TokenSequences, pad_sequences
from ssmjax.data.lra.text import TextClassification

__all__ = ["FileTask", "ListOps", "Retrieval", "TextClassification", "TokenSequences",
           "pad_sequences"]
