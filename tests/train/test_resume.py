"""Interrupted (preempted, SIGTERM) and resumed training continues exactly; bad checkpoints
fail loudly."""

import json
import signal

import jax
import numpy as np
import pytest

from ssmjax.train import (CheckpointError, Checkpointer, OptimizerConfig, TrainingRun, override,
                          train)
from ssmjax.train.logging import RunLogger, read_metrics
from ssmjax.train.sharding import make_mesh
from tiny import tiny_config


def train_losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    config = tiny_config()
    train(config, tmp_path / "whole", show_progress=False)
    train(config, tmp_path / "split", stop_at_step=5, show_progress=False)  # preempted at 5
    # The checkpoint at step 4 is the latest: step 5 is recomputed after the resume.
    train(config, tmp_path / "split", resume=True, show_progress=False)
    whole, split = train_losses(tmp_path / "whole"), train_losses(tmp_path / "split")
    assert sorted(whole) == list(range(1, 9))
    for step in range(1, 9):
        np.testing.assert_allclose(split[step], whole[step], rtol=1e-6, err_msg=f"step {step}")
    assert (tmp_path / "whole" / "curves.png").stat().st_size > 0
    assert any((tmp_path / "whole" / "tensorboard").iterdir())


def test_resume_without_checkpoint_is_an_error(tmp_path):
    config = tiny_config()
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        train(config, tmp_path / "empty", resume=True, show_progress=False)


def test_existing_different_or_corrupt_checkpoints_are_errors(tmp_path):
    config = tiny_config()
    train(config, tmp_path / "run", stop_at_step=2, show_progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints .* pass --resume"):
        train(config, tmp_path / "run", show_progress=False)
    with pytest.raises(ValueError, match=r"written with other settings \(model.d_model: 16 → 24, "
                                         r"train.batch_size: 8 → 4\)"):
        train(override(config, {"train.batch_size": 4, "model.d_model": 24}), tmp_path / "run",
              resume=True, show_progress=False)
    # Restored directly (as an evaluation does), another model's checkpoint names the
    # parameters whose shapes differ instead of failing inside Orbax.
    other = TrainingRun.create(override(config, {"model.d_model": 24}),
                               make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    checkpointer = Checkpointer(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"holds another model: .*embedding/embedding has "
                                              r"shape \(8, 16\) in the checkpoint, \(8, 24\) in this run"):
        checkpointer.restore(other.abstract_checkpoint_state())
    checkpointer.close()
    step_dir = tmp_path / "run" / "checkpoints" / "latest" / "2"
    corrupted = 0
    for path in step_dir.rglob("*"):
        if path.is_file() and "state" in path.parts:
            path.write_bytes(b"\x00garbage")
            corrupted += 1
    assert corrupted > 0
    with pytest.raises(CheckpointError, match="checkpoint step 2 .* cannot be restored"):
        train(config, tmp_path / "run", resume=True, show_progress=False)


def test_a_run_extends_past_its_end_and_old_checkpoints_resume(tmp_path, capsys):
    """A finished run continues when train.steps rises (with a constant schedule, exactly as
    if it had been planned longer), from a checkpoint written before the config had fields it
    has now."""
    constant = OptimizerConfig(learning_rate=1e-2, schedule="constant", warmup_steps=2)
    train(tiny_config(steps=10, optimizer=constant), tmp_path / "whole", show_progress=False)
    short = tiny_config(steps=6, optimizer=constant)
    train(short, tmp_path / "run", show_progress=False)
    # As a checkpoint written before these fields existed: they read as their defaults.
    meta_file = tmp_path / "run" / "checkpoints" / "latest" / "6" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta["config"]["train"]["optimizer"]["ssm_learning_rate"], meta["types"]
    meta_file.write_text(json.dumps(meta))

    capsys.readouterr()
    train(short, tmp_path / "run", resume=True, show_progress=False)  # complete: nothing to do
    assert "complete at step 6" in capsys.readouterr().out
    longer = tiny_config(steps=10, log_every=2, optimizer=constant)
    train(longer, tmp_path / "run", resume=True, show_progress=False)
    assert "resuming at step 6 with train.log_every: 1 → 2, train.steps: 6 → 10" in \
        capsys.readouterr().out
    whole, extended = train_losses(tmp_path / "whole"), train_losses(tmp_path / "run")
    assert sorted(extended) == [1, 2, 3, 4, 5, 6, 8, 10]
    for step in extended:
        np.testing.assert_allclose(extended[step], whole[step], rtol=1e-6, err_msg=f"step {step}")
    with pytest.raises(ValueError, match="is at step 10, past train.steps = 8"):
        train(tiny_config(steps=8, optimizer=constant), tmp_path / "run", resume=True,
              show_progress=False)


def test_sigterm_checkpoints_the_current_step_and_resume_finishes(tmp_path, monkeypatch):
    config = tiny_config(checkpoint_every=100)  # no regular checkpoint before the end
    log = RunLogger.log

    def log_then_ask_to_stop(self, step, metrics, tokens_per_step=None):
        if step == 3 and "loss" in metrics:
            signal.raise_signal(signal.SIGTERM)  # what `timeout` or a scheduler sends
        return log(self, step, metrics, tokens_per_step)

    monkeypatch.setattr(RunLogger, "log", log_then_ask_to_stop)
    handler = signal.getsignal(signal.SIGTERM)
    train(config, tmp_path / "run", show_progress=False)
    assert signal.getsignal(signal.SIGTERM) is handler  # restored after the run
    checkpointer = Checkpointer(tmp_path / "run")
    assert checkpointer.latest_step() == 3
    checkpointer.close()
    assert not (tmp_path / "run" / "curves.png").exists()  # an unfinished run is not summarised

    monkeypatch.setattr(RunLogger, "log", log)
    train(config, tmp_path / "run", resume=True, show_progress=False)
    train(config, tmp_path / "whole", show_progress=False)
    split, whole = train_losses(tmp_path / "run"), train_losses(tmp_path / "whole")
    assert sorted(split) == sorted(whole) == list(range(1, 9))
    for step in range(1, 9):
        np.testing.assert_allclose(split[step], whole[step], rtol=1e-6, err_msg=f"step {step}")


def test_steps_per_call_trains_the_same_run(tmp_path):
    """Several steps per compiled call draw the same batches and make the same updates, and a
    run may resume with another call size (it is not part of the run's identity)."""
    train(tiny_config(log_every=2), tmp_path / "one", show_progress=False)
    train(tiny_config(log_every=2, steps_per_call=2), tmp_path / "two", show_progress=False)
    # Preempted at step 6, inside the second call of 4 (cut there); resumed from the
    # checkpoint at 4 in calls of 2.
    mixed = dict(log_every=4, checkpoint_every=4)
    train(tiny_config(**mixed, steps_per_call=4), tmp_path / "mixed", stop_at_step=6,
          show_progress=False)
    train(tiny_config(**mixed, steps_per_call=2), tmp_path / "mixed", resume=True,
          show_progress=False)
    one, two, mixed = (train_losses(tmp_path / name) for name in ("one", "two", "mixed"))
    assert sorted(one) == sorted(two) == [2, 4, 6, 8]
    for step in one:
        np.testing.assert_allclose(two[step], one[step], rtol=1e-6, err_msg=f"step {step}")
    assert sorted(mixed) == [4, 8]
    for step in mixed:
        np.testing.assert_allclose(mixed[step], one[step], rtol=1e-6, err_msg=f"step {step}")
