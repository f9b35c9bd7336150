"""Orbax checkpoints of a training run: the latest N and the best one, saved asynchronously.

A checkpoint holds the model and optimiser state, the step, the data position and the RNG
key, so that a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that should be there is missing, or cannot be read."""


def _path_name(path: tuple) -> str:
    """``layers/0/mixer/in_proj/kernel`` from a JAX tree path."""
    return "/".join(str(getattr(entry, "key", getattr(entry, "idx", entry))) for entry in path)


def _item_handlers() -> dict[str, Any]:
    """The items of a checkpoint; named up front so that a manager can read what a step holds
    (its arrays' shapes) before restoring anything."""
    return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


class Checkpointer:
    """``<workdir>/checkpoints/latest`` keeps the last ``keep_last`` saves;
    ``<workdir>/checkpoints/best`` keeps the one with the best ``best_metric`` (the lowest with
    ``best_mode="min"``, the highest with ``"max"``)."""

    def __init__(self, workdir: str | pathlib.Path, *, keep_last: int = 3,
                 best_metric: str = "eval_loss", best_mode: str = "min"):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode is {best_mode!r}, expected 'min' or 'max'")
        root = pathlib.Path(workdir).resolve() / "checkpoints"
        self.root = root
        self.best_metric = best_metric
        self.latest = ocp.CheckpointManager(
            root / "latest", item_handlers=_item_handlers(), options=ocp.CheckpointManagerOptions(
                max_to_keep=keep_last, enable_async_checkpointing=True, create=True))
        self.best = ocp.CheckpointManager(
            root / "best", item_handlers=_item_handlers(), options=ocp.CheckpointManagerOptions(
                max_to_keep=1, best_fn=lambda metrics: metrics[best_metric], best_mode=best_mode,
                keep_checkpoints_without_metrics=False, enable_async_checkpointing=True,
                create=True))

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> None:
        """Starts an asynchronous save of ``state`` (a pytree of arrays) and ``meta`` (JSON)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.latest.save(step, args=args, force=True)
        if metrics is not None and self.best_metric in metrics:
            self.best.save(step, args=args, metrics={k: float(v) for k, v in metrics.items()},
                           force=True)

    def _unreadable(self, step: int, error: Exception) -> CheckpointError:
        return CheckpointError(f"checkpoint step {step} in {self.root / 'latest'} cannot be "
                               f"restored ({type(error).__name__}: {error})")

    def _step(self, step: int | None) -> int:
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint to resume from in {self.root / 'latest'}")
        return step

    def read_meta(self, step: int | None = None) -> dict:
        """The JSON ``meta`` of the latest (or ``step``) checkpoint, without its arrays."""
        step = self._step(step)
        try:
            return self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as error:  # Orbax raises many types; all mean "unreadable" here
            raise self._unreadable(step, error) from error

    def _check_shapes(self, step: int, abstract_state: Any) -> None:
        """Raises naming every array whose saved shape differs from ``abstract_state``'s, and
        every array only one of them has."""
        try:
            saved = self.latest.item_metadata(step)["state"]
        except Exception as error:  # Orbax raises many types; all mean "unreadable" here
            raise self._unreadable(step, error) from error
        saved = getattr(saved, "tree", saved)
        saved_shapes = {_path_name(p): tuple(m.shape) for p, m in
                        jax.tree_util.tree_flatten_with_path(saved)[0] if hasattr(m, "shape")}
        shapes = {_path_name(p): tuple(x.shape) for p, x in
                  jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
        problems = [f"{key} has shape {saved_shapes[key]} in the checkpoint, {shapes[key]} in "
                    "this run" for key in shapes if key in saved_shapes
                    and saved_shapes[key] != shapes[key]]
        problems += [f"{key} is not in the checkpoint" for key in shapes if key not in saved_shapes]
        problems += [f"{key} is in the checkpoint, not in this run" for key in saved_shapes
                     if key not in shapes]
        if problems:
            raise CheckpointError(f"checkpoint step {step} in {self.root / 'latest'} holds another "
                                  f"model: {'; '.join(problems)}")

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores the latest (or ``step``) checkpoint into the structure of ``abstract_state``.

        Raises:
            CheckpointError: no checkpoint in the directory, one that cannot be read, or one
                whose arrays have other shapes or names than ``abstract_state``'s (naming them).
        """
        step = self._step(step)
        self._check_shapes(step, abstract_state)
        try:
            restored = self.latest.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as error:  # Orbax raises many types; all mean "unreadable" here
            raise self._unreadable(step, error) from error
        return restored.state, restored.meta

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        self.best.close()
