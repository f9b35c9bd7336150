"""Tiny experiments that train in seconds, for the training tests: an on-device task, host
tasks over in-memory data sets (token prediction; classification of one or two documents), and
a tiny classifier registered with the classification objective."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssmjax.data import SelectiveCopying
from ssmjax.data.source import BatchSource
from ssmjax.models import MambaConfig
from ssmjax.nn.partitioning import axes
from ssmjax.train import (CLASSIFICATION, ExperimentConfig, OptimizerConfig, TrainConfig,
                          register_model)

SPLITS = ("train", "validation")


def tiny_config(**train_overrides) -> ExperimentConfig:
    task = SelectiveCopying(context_length=12, num_tokens=3, num_data_tokens=5)
    train = dict(steps=8, batch_size=8, eval_every=4, eval_batches=2, log_every=1,
                 checkpoint_every=2, optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=2))
    train.update(train_overrides)
    return ExperimentConfig(name="tiny", model=MambaConfig(d_model=16, n_layer=1, vocab_size=task.vocab_size),
                            task=task, train=TrainConfig(**train))


class ArrayData:
    """A random-access data set over equally long numpy arrays."""

    def __init__(self, **arrays: np.ndarray):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {name: array[indices] for name, array in self.arrays.items()}


def _split_rng(split: str) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split is {split!r}, expected one of {SPLITS}")
    return np.random.default_rng(SPLITS.index(split))


@dataclasses.dataclass(frozen=True)
class HostTokens:
    """Token prediction read on the host: random rows whose every target is the input token
    plus one (mod the vocabulary)."""

    train_examples: int = 40
    validation_examples: int = 13
    sequence_length: int = 12
    vocab_size: int = 7

    def data(self, split: str) -> ArrayData:
        rng = _split_rng(split)
        count = self.train_examples if split == "train" else self.validation_examples
        inputs = rng.integers(0, self.vocab_size, (count, self.sequence_length), dtype=np.int32)
        loss_mask = np.ones(inputs.shape, bool)
        loss_mask[:, :2] = False
        return ArrayData(inputs=inputs, targets=(inputs + 1) % self.vocab_size, loss_mask=loss_mask)

    def source(self, split: str, batch_size: int, *, seed: int) -> BatchSource:
        return BatchSource(self.data(split), batch_size, seed=seed)

    def evaluation_data(self, split: str) -> ArrayData:
        return self.data(split)


@dataclasses.dataclass(frozen=True)
class HostClassification:
    """Classification read on the host: right-padded random documents (two with
    ``two_documents``) and random labels."""

    train_examples: int = 24
    validation_examples: int = 11
    sequence_length: int = 10
    vocab_size: int = 6
    num_classes: int = 3
    two_documents: bool = False

    def data(self, split: str) -> ArrayData:
        rng = _split_rng(split)
        count = self.train_examples if split == "train" else self.validation_examples

        def document():
            inputs = rng.integers(0, self.vocab_size, (count, self.sequence_length), dtype=np.int32)
            lengths = rng.integers(2, self.sequence_length + 1, (count, 1))
            return inputs, np.arange(self.sequence_length) < lengths

        inputs, mask = document()
        arrays = dict(inputs=inputs, mask=mask,
                      label=rng.integers(0, self.num_classes, (count,), dtype=np.int32))
        if self.two_documents:
            arrays["inputs2"], arrays["mask2"] = document()
        return ArrayData(**arrays)

    def source(self, split: str, batch_size: int, *, seed: int) -> BatchSource:
        return BatchSource(self.data(split), batch_size, seed=seed)

    def evaluation_data(self, split: str) -> ArrayData:
        return self.data(split)


@dataclasses.dataclass(frozen=True)
class TinyClassifierConfig:
    vocab_size: int = 6
    width: int = 8
    num_classes: int = 3


class TinyClassifier(nnx.Module):
    """Mean-pooled embeddings of each document, concatenated (zeros for a missing second) →
    linear head: ``(b, l)`` ids and masks → ``(b, num_classes)`` logits."""

    def __init__(self, config: TinyClassifierConfig, *, rngs: nnx.Rngs):
        self.width = config.width
        self.embedding = nnx.Embed(config.vocab_size, config.width, rngs=rngs,
                                   embedding_metadata=axes("vocab", "embed", group="decay"))
        self.head = nnx.Linear(2 * config.width, config.num_classes, rngs=rngs,
                               kernel_metadata=axes("embed", None, group="decay"),
                               bias_metadata=axes(None, group="no_decay"))

    def pool(self, inputs, mask):
        weights = mask.astype(jnp.float32)[..., None]
        return jnp.sum(self.embedding(inputs) * weights, axis=1) / jnp.maximum(weights.sum(1), 1)

    def __call__(self, inputs, *, mask, inputs2=None, mask2=None):
        first = self.pool(inputs, mask)
        second = jnp.zeros_like(first) if inputs2 is None else self.pool(inputs2, mask2)
        return self.head(jnp.concatenate([first, second], axis=-1))


def check_classifier_task(config: TinyClassifierConfig, task: HostClassification) -> None:
    if (config.vocab_size, config.num_classes) != (task.vocab_size, task.num_classes):
        raise ValueError(f"model (vocab_size, num_classes) = ({config.vocab_size}, "
                         f"{config.num_classes}), expected the task's ({task.vocab_size}, "
                         f"{task.num_classes})")


register_model(TinyClassifierConfig, build=TinyClassifier, objective=CLASSIFICATION,
               check=check_classifier_task)


def host_token_config(**train_overrides) -> ExperimentConfig:
    task = HostTokens()
    train = dict(steps=8, batch_size=8, eval_every=4, eval_batches=None, log_every=1,
                 checkpoint_every=2, optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=2))
    train.update(train_overrides)
    return ExperimentConfig(name="host_tokens", model=MambaConfig(d_model=16, n_layer=1,
                                                                  vocab_size=task.vocab_size),
                            task=task, train=TrainConfig(**train))


def classification_config(two_documents: bool = False, **train_overrides) -> ExperimentConfig:
    task = HostClassification(two_documents=two_documents)
    train = dict(steps=4, batch_size=4, eval_every=4, eval_batches=None, log_every=1,
                 checkpoint_every=4, optimizer=OptimizerConfig(learning_rate=5e-2, warmup_steps=0))
    train.update(train_overrides)
    return ExperimentConfig(name="classify", model=TinyClassifierConfig(), task=task,
                            train=TrainConfig(**train))
