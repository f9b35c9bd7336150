"""Host batches: the same data at the same step, every example once per epoch, shards that
tile the global batch, an evaluation pass that counts every example once."""

import numpy as np
import pytest

from ssmjax.data.source import (WEIGHT, BatchSource, EpochOrder, evaluation_batches,
                                evaluation_steps, prefetched)


class Rows:
    """A random-access data set whose example i is the row [i, i, i]."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, indices):
        return {"inputs": np.repeat(np.asarray(indices)[:, None], 3, axis=1)}


def test_every_example_once_per_epoch_and_a_new_order_each_epoch():
    order = EpochOrder(examples=103, batch_size=10, seed=7)
    assert order.steps_per_epoch == 10
    epochs = [np.concatenate([order.batch_indices(e * 10 + s) for s in range(10)]) for e in range(2)]
    for seen in epochs:
        assert len(set(seen.tolist())) == 100  # no repeats; 3 examples dropped
    assert not np.array_equal(epochs[0], epochs[1])
    picked = order.batch_indices(3)
    picked[:] = -1  # the caller's copy: the epoch's order, drawn once, is unchanged
    assert np.array_equal(order.batch_indices(3), epochs[0][30:40])


def test_same_seed_and_step_same_batch_whatever_was_read_before():
    source = BatchSource(Rows(50), 8, seed=3, process_index=0, process_count=1)
    later = source.batch_at(17)["inputs"]
    fresh = BatchSource(Rows(50), 8, seed=3, process_index=0, process_count=1)
    for step in range(17):
        fresh.batch_at(step)
    np.testing.assert_array_equal(fresh.batch_at(17)["inputs"], later)
    other_seed = BatchSource(Rows(50), 8, seed=4, process_index=0, process_count=1)
    assert not np.array_equal(other_seed.batch_at(17)["inputs"], later)


def test_process_shards_tile_the_global_batch():
    whole = BatchSource(Rows(40), 8, seed=1, process_index=0, process_count=1).batch_at(5)["inputs"]
    parts = [BatchSource(Rows(40), 8, seed=1, process_index=p, process_count=4).batch_at(5)["inputs"]
             for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    with pytest.raises(ValueError, match="multiple of the 3 JAX processes"):
        BatchSource(Rows(40), 8, process_index=0, process_count=3)


def test_last_batch_completed_without_dropping():
    order = EpochOrder(examples=5, batch_size=4, shuffle=False, drop_remainder=False)
    assert order.steps_per_epoch == 2
    np.testing.assert_array_equal(order.batch_indices(1), [4, 0, 1, 2])
    np.testing.assert_array_equal(order.batch_indices(2), [0, 1, 2, 3])  # epoch 1


def test_evaluation_pass_weights_count_each_example_once():
    batches = list(evaluation_batches(Rows(10), 4))
    assert len(batches) == evaluation_steps(Rows(10), 4) == 3
    weights = np.concatenate([b[WEIGHT] for b in batches])
    rows = np.concatenate([b["inputs"][:, 0] for b in batches])
    assert weights.sum() == 10
    assert sorted(rows[weights == 1].tolist()) == list(range(10))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size is 0"):
        EpochOrder(examples=5, batch_size=0)
    with pytest.raises(ValueError, match="more than the 5 examples"):
        EpochOrder(examples=5, batch_size=6)
    with pytest.raises(ValueError, match="step is -1"):
        EpochOrder(examples=5, batch_size=2).batch_indices(-1)


def test_prefetch_keeps_order_and_raises_the_producers_error():
    source = BatchSource(Rows(30), 6, seed=0, process_index=0, process_count=1)
    steps = []
    for step, batch in source.batches(4):
        np.testing.assert_array_equal(batch["inputs"], source.batch_at(step)["inputs"])
        steps.append(step)
        if len(steps) == 5:
            break
    assert steps == [4, 5, 6, 7, 8]

    def failing():
        yield 1
        raise RuntimeError("file vanished")

    with pytest.raises(RuntimeError, match="file vanished"):
        list(prefetched(failing()))
