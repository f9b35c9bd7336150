"""tensorflow-datasets builders of the LRA tasks (imported when a task prepares its data).

One builder per task; a builder config carries the task, whose ``split_examples`` makes the
stored examples. Data is written as array_record (read back by index, with no TensorFlow) in
the order the examples come (``disable_shuffling``), so example ``i`` of a prepared split is
example ``i`` of its source file or of the generator.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from ssmjax.data.lra.tasks import LABEL, FileTask

VERSION = "1.0.0"
FILE_FORMAT = "array_record"


@dataclasses.dataclass
class TaskConfig(tfds.core.BuilderConfig):
    """A builder config holding the task whose data it prepares."""

    task: Any = None


class _TaskBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Stored features: each sequence field as ``uint8 (None,)`` and ``label``."""

    VERSION = tfds.core.Version(VERSION)

    def _info(self) -> tfds.core.DatasetInfo:
        task: FileTask = self.builder_config.task
        features = {field.stored: tfds.features.Tensor(shape=(None,), dtype=np.uint8)
                    for field in task.fields}
        features[LABEL] = tfds.features.ClassLabel(num_classes=task.num_classes)
        return tfds.core.DatasetInfo(builder=self, description=type(task).__doc__,
                                     features=tfds.features.FeaturesDict(features),
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        def download(url: str) -> pathlib.Path:
            return pathlib.Path(dl_manager.download_and_extract(url))

        splits = self.builder_config.task.split_examples(download)
        return {name: self._generate_examples(examples) for name, examples in splits.items()}

    def _generate_examples(self, examples):
        yield from enumerate(examples)


class LraListops(_TaskBuilder):
    """LRA ListOps (:class:`ssmjax.data.lra.ListOps`)."""


class LraText(_TaskBuilder):
    """LRA byte-level text classification, IMDB (:class:`ssmjax.data.lra.TextClassification`)."""


class LraRetrieval(_TaskBuilder):
    """LRA byte-level document retrieval, AAN (:class:`ssmjax.data.lra.Retrieval`)."""


BUILDERS = {builder.name: builder for builder in (LraListops, LraText, LraRetrieval)}


def prepared(task: FileTask) -> tfds.core.DatasetBuilder:
    """The builder of ``task``'s data, its files written under ``task.data_dir`` if absent."""
    config = TaskConfig(name=task.builder_config_name, description=type(task).__name__, task=task)
    builder = BUILDERS[task.builder_name](config=config, data_dir=task.data_dir,
                                          file_format=FILE_FORMAT)
    builder.download_and_prepare()
    return builder
