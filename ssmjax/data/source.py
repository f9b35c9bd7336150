"""Host-side batches of a random-access data set: seeded, resumable and shardable.

Data sets that live in files (Long Range Arena, text corpora) are read on the host into numpy
batches; the training loop places them on the devices. What a batch holds is a function of
the seed and the global step alone, so the data position of a resumed run is its step:

    epoch(s)   = s // steps_per_epoch
    order(e)   = a permutation of the examples drawn from (seed, e)    (the identity unshuffled)
    batch(s)   = order(epoch(s))[(s mod steps_per_epoch) · B : … + B]  the global batch of B

Under several JAX processes, process p of P reads rows ``[p·B/P, (p+1)·B/P)`` of every global
batch, so the processes together read each global batch exactly once.

Evaluation passes over a split once, in order: :func:`evaluation_batches` pads the last batch
with copies of its first row and marks real rows with ``weight`` 1 (padding rows 0), so that
metrics weighted by it count every example exactly once whatever the batch size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import queue
import threading
from typing import Any, Iterator, Mapping, Protocol

import numpy as np

Batch = dict[str, np.ndarray]
WEIGHT = "weight"


class RandomAccess(Protocol):
    """A data set read by index: ``len(data)`` examples; ``data[indices]`` the rows at the
    int64 ``indices (k,)``, stacked into arrays that lead with k."""

    def __len__(self) -> int: ...

    def __getitem__(self, indices: np.ndarray) -> Mapping[str, np.ndarray]: ...


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} is {value!r}, expected a positive integer")
    return int(value)


@dataclasses.dataclass(frozen=True)
class EpochOrder:
    """Which examples make up global batch ``step`` (the module docstring's equations).

    Args:
        examples: size of the data set.
        batch_size: global batch B.
        seed: seed of the per-epoch permutations.
        shuffle: draw a new order every epoch (False: the data set's own order).
        drop_remainder: epochs hold ``⌊examples / B⌋`` whole batches; otherwise the last batch
            of an epoch is completed from the start of the same epoch's order.
    """

    examples: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = True

    def __post_init__(self):
        _check_positive("examples", self.examples)
        _check_positive("batch_size", self.batch_size)
        if self.drop_remainder and self.batch_size > self.examples:
            raise ValueError(f"batch_size is {self.batch_size}, more than the {self.examples} "
                             "examples of the data set (pass drop_remainder=False to repeat them)")

    @property
    def steps_per_epoch(self) -> int:
        whole, rest = divmod(self.examples, self.batch_size)
        return whole if self.drop_remainder or not rest else whole + 1

    def epoch_order(self, epoch: int) -> np.ndarray:
        """``(examples,)`` int64, read-only: the order of epoch ``epoch``."""
        if not self.shuffle:
            return np.arange(self.examples, dtype=np.int64)
        return _permutation(self.examples, self.seed, epoch)

    def batch_indices(self, step: int) -> np.ndarray:
        """``(B,)`` int64: the examples of global batch ``step`` (``step ≥ 0``)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step is {step!r}, expected an integer >= 0")
        epoch, position = divmod(int(step), self.steps_per_epoch)
        order = self.epoch_order(epoch)
        start = position * self.batch_size
        picked = order[start:start + self.batch_size].copy()
        if picked.shape[0] < self.batch_size:  # the short last batch of an epoch
            picked = np.concatenate([picked, np.resize(order, self.batch_size - picked.shape[0])])
        return picked


@functools.lru_cache(maxsize=4)
def _permutation(examples: int, seed: int, epoch: int) -> np.ndarray:
    # Drawing the permutation of a 100K-example split costs about as much as reading a batch
    # of 16 from it; every batch of an epoch reuses it.
    order = np.random.default_rng([seed, epoch]).permutation(examples).astype(np.int64)
    order.flags.writeable = False
    return order


def process_rows(batch_size: int, process_index: int, process_count: int) -> slice:
    """Rows of a global batch that process ``process_index`` of ``process_count`` reads."""
    if batch_size % process_count:
        raise ValueError(f"batch_size is {batch_size}, expected a multiple of the "
                         f"{process_count} JAX processes")
    rows = batch_size // process_count
    return slice(process_index * rows, (process_index + 1) * rows)


class BatchSource:
    """Training batches of ``data``: :meth:`batch_at` ``(step)`` is this process's share of the
    global batch ``step`` (see the module docstring), a dict of numpy arrays leading with
    ``batch_size / process_count``.

    Args:
        data: a :class:`RandomAccess` data set.
        batch_size: the global batch B.
        seed, shuffle, drop_remainder: see :class:`EpochOrder`.
        process_index, process_count: this JAX process and how many read the batch
            (default: ``jax.process_index()`` and ``jax.process_count()``).
    """

    def __init__(self, data: RandomAccess, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_remainder: bool = True, process_index: int | None = None,
                 process_count: int | None = None):
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        self.data = data
        self.order = EpochOrder(len(data), batch_size, seed, shuffle, drop_remainder)
        self.rows = process_rows(batch_size, process_index, process_count)

    @property
    def batch_size(self) -> int:
        """The global batch size."""
        return self.order.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return self.order.steps_per_epoch

    def batch_at(self, step: int) -> Batch:
        """This process's rows of global batch ``step``."""
        indices = self.order.batch_indices(step)[self.rows]
        return {name: np.asarray(value) for name, value in self.data[indices].items()}

    def batches(self, first_step: int = 0, *, prefetch: int = 2) -> Iterator[tuple[int, Batch]]:
        """``(step, batch)`` from ``first_step`` on, read ``prefetch`` batches ahead on a thread."""
        steps = iter(range(first_step, 2 ** 62))
        return prefetched(((step, self.batch_at(step)) for step in steps), prefetch)


def evaluation_batches(data: RandomAccess, batch_size: int, *, process_index: int = 0,
                       process_count: int = 1) -> Iterator[Batch]:
    """One pass over ``data`` in order, in global batches of ``batch_size`` (this process's rows
    of each); the last batch is padded with copies of example 0 and every batch carries
    ``weight: (rows,)`` float32, 1 for real examples and 0 for padding."""
    _check_positive("batch_size", batch_size)
    rows = process_rows(batch_size, process_index, process_count)
    examples = len(data)
    for start in range(0, examples, batch_size):
        indices = np.arange(start, start + batch_size, dtype=np.int64)
        real = indices < examples
        indices = np.where(real, indices, 0)[rows]
        batch = {name: np.asarray(value) for name, value in data[indices].items()}
        batch[WEIGHT] = real[rows].astype(np.float32)
        yield batch


def evaluation_steps(data: RandomAccess, batch_size: int) -> int:
    """Number of batches :func:`evaluation_batches` yields."""
    return math.ceil(len(data) / _check_positive("batch_size", batch_size))


_DONE = object()


def prefetched(items: Iterator[Any], size: int = 2) -> Iterator[Any]:
    """``items`` produced ``size`` ahead by a background thread (the host reads the next
    batches while the devices run this one). An exception in the producer is raised here."""
    if size < 1:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as error:  # handed to the consumer
            buffer.put(error)

    thread = threading.Thread(target=produce, daemon=True, name="batch-prefetch")
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
