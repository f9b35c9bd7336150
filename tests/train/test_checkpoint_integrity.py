"""Checkpoints cannot silently poison a run: corrupted data bytes, a flipped bit and a changed
shape are named errors; a non-finite evaluation never becomes the best; a step left on disk
by an abandoned continuation is replaced, not refused; older checkpoints are resumed only when
asked."""

import errno
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmjax.train.checkpoint import CHECKSUMS, CheckpointError, Checkpointer, array_checksums


def state(seed=0, width=64):
    rng = np.random.default_rng(seed)
    return {"params": {"kernel": jnp.asarray(rng.standard_normal((width, 32)), jnp.float32),
                       "scale": jnp.asarray(rng.standard_normal((32,)), jnp.bfloat16)},
            "count": jnp.asarray(7, jnp.int32), "flag": jnp.asarray([True, False])}


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def saved(tmp_path, tree, steps=(1,), **metrics_by_step):
    checkpointer = Checkpointer(tmp_path, keep_last=5)
    for step in steps:
        checkpointer.save(step, tree, {"step": step}, metrics=metrics_by_step.get(f"at{step}"))
    checkpointer.close()
    return Checkpointer(tmp_path, keep_last=5)


def array_file(tmp_path, step, kind="latest"):
    """The largest data file of a checkpoint's arrays (the kernel's bytes)."""
    files = [p for p in (tmp_path / "checkpoints" / kind / str(step) / "state").rglob("*")
             if p.is_file() and "d" in p.parent.name]
    return max(files, key=lambda p: p.stat().st_size)


def test_checksums_are_sensitive_to_one_bit_and_to_order():
    tree = state()
    sums = array_checksums(tree)
    assert set(sums) == {"params/kernel", "params/scale", "count", "flag"}
    kernel = np.asarray(tree["params"]["kernel"])
    flipped = kernel.copy().view(np.uint32)
    flipped[3, 5] ^= 1 << 17
    swapped = kernel.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    for changed in (flipped.view(np.float32), swapped):
        other = {**tree, "params": {**tree["params"], "kernel": jnp.asarray(changed)}}
        assert array_checksums(other)["params/kernel"] != sums["params/kernel"]
        assert array_checksums(other)["params/scale"] == sums["params/scale"]


def test_round_trip_restores_and_verifies(tmp_path):
    tree = state()
    checkpointer = saved(tmp_path, tree)
    restored, meta = checkpointer.restore(abstract(tree))
    jax.tree.map(np.testing.assert_array_equal, restored, tree)
    assert meta[CHECKSUMS] == array_checksums(tree)
    checkpointer.close()


@pytest.mark.parametrize("damage", ["overwrite", "flip"])
def test_corrupted_array_bytes_are_a_named_error(tmp_path, damage):
    tree = state()
    saved(tmp_path, tree, steps=(1, 2)).close()
    path = array_file(tmp_path, 2)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    if damage == "overwrite":
        data[middle:middle + 8] = b"\xff" * 8
    else:
        data[middle] ^= 0x10
    path.write_bytes(bytes(data))
    checkpointer = Checkpointer(tmp_path, keep_last=5)
    with pytest.raises(CheckpointError) as raised:
        checkpointer.restore(abstract(tree))
    message = str(raised.value)
    assert "checkpoint step 2" in message
    # Orbax restores these bytes without complaint; the checksum names the array.
    assert "array params/kernel does not match the checksum" in message
    assert "--resume-from 1" in message
    restored, _ = checkpointer.restore(abstract(tree), step=1)  # the older one, when asked
    jax.tree.map(np.testing.assert_array_equal, restored, tree)
    checkpointer.close()


def test_changed_shape_names_the_array_and_both_shapes(tmp_path):
    checkpointer = saved(tmp_path, state(width=64))
    with pytest.raises(CheckpointError, match=r"params/kernel has shape \(64, 32\) in the checkpoint, \(48, 32\) in this run"):
        checkpointer.restore(abstract(state(width=48)))
    checkpointer.close()


def test_missing_step_lists_the_steps_held(tmp_path):
    checkpointer = saved(tmp_path, state(), steps=(2, 4))
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 3 .* holds steps \[2, 4\]"):
        checkpointer.restore(abstract(state()), step=3)
    checkpointer.close()


def test_non_finite_evaluation_never_becomes_best(tmp_path):
    checkpointer = saved(tmp_path, state(), steps=(1, 2, 3),
                         at1={"eval_loss": 2.0}, at2={"eval_loss": float("nan")},
                         at3={"eval_loss": float("inf")})
    assert checkpointer.best_step() == 1
    assert sorted(checkpointer.best.all_steps()) == [1]
    checkpointer.close()


def test_a_step_left_on_disk_is_replaced_and_later_ones_can_be_discarded(tmp_path):
    checkpointer = saved(tmp_path, state(0), steps=(1, 2), at2={"eval_loss": 1.0})
    assert checkpointer.discard_after(1) == [2]
    assert checkpointer.steps() == [1] and checkpointer.best_step() is None
    # A best checkpoint that latest lacks (a save cut short) is overwritten, not refused.
    checkpointer.save(2, state(1), {"step": 2}, metrics={"eval_loss": 0.5})
    checkpointer.save(2, state(2), {"step": 2}, metrics={"eval_loss": 0.4})
    checkpointer.wait()
    restored, _ = checkpointer.restore(abstract(state()), step=2)
    jax.tree.map(np.testing.assert_array_equal, restored, state(2))
    checkpointer.close()


def test_checkpoints_without_checksums_restore_with_a_warning(tmp_path):
    tree = state()
    checkpointer = saved(tmp_path, tree)
    meta_file = next((tmp_path / "checkpoints" / "latest" / "1" / "meta").glob("metadata"))
    meta_file.write_text('{"step": 1}')
    with pytest.warns(UserWarning, match="no checksums"):
        restored, _ = checkpointer.restore(abstract(tree))
    jax.tree.map(np.testing.assert_array_equal, restored, tree)
    checkpointer.close()


def test_unwritable_workdir_is_a_clear_error(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):  # as a read-only directory does (root ignores mode bits)
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "touch", refuse)
    with pytest.raises(CheckpointError, match="cannot write checkpoints under .*permission denied"):
        Checkpointer(tmp_path / "run")
