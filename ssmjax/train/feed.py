"""How batches reach the devices: drawn on device, or read on the host and placed on the mesh.

Two kinds of task:

    on-device   ``task.batch(key, batch_size)`` draws a batch from a key (the synthetic tasks):
                the batches of a call are drawn inside the compiled call itself, so the host
                does nothing between steps
    host        ``task.source(split, batch_size, *, seed)`` is a
                :class:`ssmjax.data.source.BatchSource` (this process's rows of global batch
                ``step``) and ``task.evaluation_data(split)`` the split's
                :class:`~ssmjax.data.source.RandomAccess` (LRA, text corpora)

Host batches of a call (``steps_per_call`` of them) are read, stacked into ``(count, batch,
...)`` arrays and placed on the mesh by a background thread a few calls ahead, so the devices
do not wait for the host. Either way the batch of step ``s`` is a function of the seed and
``s`` alone: a resumed run's data position is its step.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import jax
import numpy as np
from jax.sharding import NamedSharding

from ssmjax.data.source import BatchSource, RandomAccess, evaluation_batches, prefetched
from ssmjax.train.sharding import global_batch

TRAIN_SPLIT = "train"
PREFETCH_CALLS = 2


@runtime_checkable
class OnDeviceTask(Protocol):
    """A task whose batches are drawn on device from a key (``ssmjax.data.synthetic``)."""

    sequence_length: int

    def batch(self, key: jax.Array, batch_size: int) -> dict[str, jax.Array]: ...


@runtime_checkable
class HostTask(Protocol):
    """A task read on the host: training batches by step, evaluation by a pass over a split.

    ``source(split, batch_size, *, seed)``: the split's training batches (global batch
    ``batch_size``; this process's rows); ``evaluation_data(split)``: the split's examples in
    order. The loop trains on ``"train"`` and evaluates ``train.eval_split``.
    """

    sequence_length: int

    def source(self, split: str, batch_size: int, *, seed: int) -> BatchSource: ...

    def evaluation_data(self, split: str) -> RandomAccess: ...


TaskConfig = OnDeviceTask | HostTask
"""What an experiment's ``task`` is (a frozen dataclass config of either kind)."""


def is_host_task(task: Any) -> bool:
    return isinstance(task, HostTask)


def check_task(task: Any) -> None:
    """Raises unless ``task`` is an on-device or a host task."""
    if not isinstance(task, (HostTask, OnDeviceTask)):
        raise ValueError(f"task is a {type(task).__name__}, expected an on-device task "
                         "(batch(key, batch_size) and sequence_length) or a host task "
                         "(source(split, batch_size, *, seed), evaluation_data(split) and "
                         "sequence_length)")


def call_plan(start_step: int, total_steps: int, steps_per_call: int,
              stop_at_step: int | None = None) -> list[tuple[int, int]]:
    """``[(first step, count), ...]`` of the calls that train steps ``start_step + 1 …``.

    Calls end on multiples of ``steps_per_call`` (where logs, evaluations and checkpoints
    fall), at ``total_steps``, and at ``stop_at_step``.
    """
    plan, step = [], start_step
    while step < total_steps:
        count = min(steps_per_call - step % steps_per_call, total_steps - step)
        if stop_at_step is not None:
            count = max(1, min(count, stop_at_step - step))
        plan.append((step + 1, count))
        step += count
        if stop_at_step is not None and step >= stop_at_step:
            break
    return plan


def stack(batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Batches of several steps as ``(steps, rows, ...)`` arrays."""
    return {name: np.stack([batch[name] for batch in batches]) for name in batches[0]}


def call_batches(source: BatchSource, first_step: int, count: int, select: Any,
                 sharding: NamedSharding) -> dict[str, jax.Array]:
    """The batches of training steps ``first_step … first_step + count − 1`` (step ``s`` reads
    ``source.batch_at(s − 1)``; ``select`` keeps the entries the objective reads), stacked
    ``(count, batch, ...)`` and placed on the mesh with ``sharding`` (batch axis 1)."""
    batches = [select(source.batch_at(step - 1)) for step in range(first_step, first_step + count)]
    return global_batch(stack(batches), sharding, batch_axis=1)


def host_training_calls(source: BatchSource, plan: Sequence[tuple[int, int]],
                        select: Any, sharding: NamedSharding,
                        prefetch: int = PREFETCH_CALLS) -> Iterator[dict[str, jax.Array]]:
    """:func:`call_batches` of each call of ``plan``, produced ``prefetch`` calls ahead on a
    background thread."""
    calls = (call_batches(source, first, count, select, sharding) for first, count in plan)
    return prefetched(calls, prefetch)


def host_evaluation_batches(data: RandomAccess, batch_size: int, select: Any,
                            sharding: NamedSharding, max_batches: int | None = None,
                            prefetch: int = PREFETCH_CALLS) -> Iterator[dict[str, jax.Array]]:
    """One in-order pass over ``data`` (the first ``max_batches`` batches, if given) in global
    batches of ``batch_size`` with their ``weight``, placed on the mesh, read ahead."""

    def batches():
        for index, batch in enumerate(evaluation_batches(
                data, batch_size, process_index=jax.process_index(),
                process_count=jax.process_count())):
            if max_batches is not None and index >= max_batches:
                return
            yield global_batch(select(batch), sharding)

    return prefetched(batches(), prefetch)
