"""Orbax checkpoints of a training run: the latest N and the best one, saved asynchronously,
each verified against checksums when it is restored.

A checkpoint holds the model and optimiser state, the step, the data position and the config,
so that a resumed run continues exactly where the interrupted one stopped. Orbax checks the
files' structure but not their data bytes (a few overwritten bytes restore silently as other
numbers), so every save also records a checksum of each array, computed on the devices, and
:meth:`Checkpointer.restore` recomputes them after reading: a mismatch is a
:class:`CheckpointError` naming the checkpoint and the array. Checksums of 32-bit words
``w_0 … w_{n−1}`` of an array's bytes (narrower dtypes widened word by word)::

    s₁ = Σ w_i  mod 2³²          s₂ = Σ (i + 1) · w_i  mod 2³²

``s₁`` changes with any single changed word (every flipped bit), ``s₂`` also with words that
trade places. Integer arithmetic, so the sums are the same on every backend and sharding.
"""

from __future__ import annotations

import errno
import pathlib
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

CHECKSUMS = "checksums"


class CheckpointError(RuntimeError):
    """A checkpoint that should be there is missing, cannot be read, or does not hold what
    was written."""


def _words(x: jax.Array) -> jax.Array:
    """The bytes of ``x`` as uint32 words, one per element (narrower dtypes zero-extended)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32).ravel()
    width = np.dtype(x.dtype).itemsize
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}
    if width in unsigned:
        return jax.lax.bitcast_convert_type(x, unsigned[width]).astype(jnp.uint32).ravel()
    if width == 8:  # float64 / int64 under x64: two words per element
        return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()
    raise ValueError(f"cannot checksum an array of dtype {x.dtype}")


def _checksum(x: jax.Array) -> jax.Array:
    """``(s₁, s₂)`` of the module docstring, as a uint32 ``(2,)``."""
    words = _words(jnp.asarray(x))
    position = jnp.arange(1, words.shape[0] + 1, dtype=jnp.uint32)
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * position, dtype=jnp.uint32)])


_checksums_on_device = jax.jit(lambda tree: jax.tree.map(_checksum, tree))


def _path_name(path: tuple) -> str:
    """``a/b/0/c`` for a pytree path (dict keys, sequence indices and attributes alike, so that
    a tuple restored as a dict of "0", "1" names its leaves the same)."""
    parts = (getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))) for key in path)
    return "/".join(str(part) for part in parts)


def _flat_paths(tree: Any) -> dict[str, Any]:
    return {_path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def array_checksums(state: Any) -> dict[str, str]:
    """``{array path: "s₁-s₂" in hex}`` for every array of the pytree ``state``."""
    sums = jax.device_get(_checksums_on_device(state))
    return {path: f"{int(value[0]):08x}-{int(value[1]):08x}" for path, value in _flat_paths(sums).items()}


def _item_handlers() -> dict[str, Any]:
    """The items of a checkpoint; named up front so that a manager can read what a step holds
    (its arrays' shapes, its meta) before restoring anything."""
    return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


def _check_writable(directory: pathlib.Path) -> None:
    """A clear error now rather than a failed asynchronous save later."""
    existing = directory
    while not existing.exists():
        existing = existing.parent
    probe = existing / ".ssmjax_write_probe"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        reason = "permission denied" if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS) \
            else error.strerror
        raise CheckpointError(f"cannot write checkpoints under {directory}: {reason} at {existing}; "
                              "choose a writable --workdir") from None


class Checkpointer:
    """``<workdir>/checkpoints/latest`` keeps the last ``keep_last`` saves;
    ``<workdir>/checkpoints/best`` keeps the one with the lowest ``best_metric`` (the highest
    with ``best_mode="max"``); a save whose metric is not finite never becomes the best."""

    def __init__(self, workdir: str | pathlib.Path, *, keep_last: int = 3,
                 best_metric: str = "eval_loss", best_mode: str = "min"):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode is {best_mode!r}, expected 'min' or 'max'")
        root = pathlib.Path(workdir).resolve() / "checkpoints"
        _check_writable(root)
        self.root = root
        self.best_metric = best_metric
        self.latest = ocp.CheckpointManager(
            root / "latest", item_handlers=_item_handlers(), options=ocp.CheckpointManagerOptions(
                max_to_keep=keep_last, enable_async_checkpointing=True, create=True,
                cleanup_tmp_directories=True))
        self.best = ocp.CheckpointManager(
            root / "best", item_handlers=_item_handlers(), options=ocp.CheckpointManagerOptions(
                max_to_keep=1, best_fn=lambda metrics: metrics[best_metric], best_mode=best_mode,
                keep_checkpoints_without_metrics=False, enable_async_checkpointing=True,
                create=True, cleanup_tmp_directories=True))

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def steps(self) -> list[int]:
        """The steps held under ``latest``, oldest first."""
        return sorted(self.latest.all_steps())

    def best_step(self) -> int | None:
        return self.best.best_step()

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> None:
        """Starts an asynchronous save of ``state`` (a pytree of arrays) and ``meta`` (JSON),
        with the arrays' checksums added to ``meta``; also under ``best`` when ``metrics``
        hold a finite ``best_metric``.

        A step already on disk (left by a run that was rolled back, or a save cut short) is
        replaced rather than refused.
        """
        meta = {**meta, CHECKSUMS: array_checksums(state)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._replace(self.latest, step)
        self.latest.save(step, args=args, force=True)
        value = None if metrics is None else metrics.get(self.best_metric)
        if value is not None and np.isfinite(float(value)):
            self._replace(self.best, step)
            self.best.save(step, args=args, metrics={k: float(v) for k, v in metrics.items()},
                           force=True)

    @staticmethod
    def _replace(manager: ocp.CheckpointManager, step: int) -> None:
        if step in manager.all_steps():
            manager.wait_until_finished()
            manager.delete(step)

    def discard_after(self, step: int) -> list[int]:
        """Deletes every checkpoint (latest and best) after ``step``; returns their steps.

        What resuming from an older checkpoint does, so that the run's later saves never meet
        checkpoints of the abandoned continuation.
        """
        self.wait()
        discarded = []
        for manager in (self.latest, self.best):
            for later in sorted(s for s in manager.all_steps() if s > step):
                manager.delete(later)
                discarded.append(later)
        return sorted(set(discarded))

    def _unreadable(self, step: int, error: Exception) -> CheckpointError:
        return CheckpointError(f"checkpoint step {step} in {self.root / 'latest'} cannot be "
                               f"restored ({type(error).__name__}: {error}){self._older_hint(step)}")

    def _step(self, step: int | None) -> int:
        """``step``, or the latest; a named error when there is none or not that one."""
        available = self.steps()
        where = self.root / "latest"
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint to resume from in {where}")
        if step not in available:
            raise CheckpointError(f"no checkpoint of step {step} in {where}; it holds steps "
                                  f"{available or 'none'}")
        return step

    def read_meta(self, step: int | None = None) -> dict:
        """The JSON ``meta`` of the latest (or ``step``) checkpoint, without its arrays."""
        step = self._step(step)
        try:
            return self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as error:  # Orbax raises many types; all mean "unreadable" here
            raise self._unreadable(step, error) from error

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores the latest (or ``step``) checkpoint into the structure of ``abstract_state``
        and verifies every array against the checksums saved with it.

        Raises:
            CheckpointError: no checkpoint (or not that step), one that cannot be read, one
                whose arrays have other shapes or names than ``abstract_state``'s (each named,
                with both shapes), or an array that does not match its checksum (named).
        """
        step = self._step(step)
        self._check_shapes(abstract_state, step)
        try:
            restored = self.latest.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as error:  # Orbax raises many types; all mean "unreadable" here
            raise self._unreadable(step, error) from error
        self._verify(restored.state, restored.meta, step)
        return restored.state, restored.meta

    def _older_hint(self, step: int) -> str:
        older = [s for s in self.steps() if s < step]
        if not older:
            return ""
        return (f"; an older checkpoint can be resumed instead with --resume-from {older[-1]} "
                f"(steps held: {older}), which discards the later ones")

    def _check_shapes(self, abstract_state: Any, step: int) -> None:
        """Raises naming every array whose saved shape differs from ``abstract_state``'s, and
        every array only one of them has."""
        try:
            saved = self.latest.item_metadata(step)["state"]
        except Exception as error:  # Orbax raises many types; all mean "unreadable" here
            raise self._unreadable(step, error) from error
        saved = getattr(saved, "tree", saved)
        saved_shapes = {path: tuple(leaf.shape) for path, leaf in _flat_paths(saved).items()
                        if hasattr(leaf, "shape")}
        shapes = {path: tuple(leaf.shape) for path, leaf in _flat_paths(abstract_state).items()}
        problems = [f"{key} has shape {saved_shapes[key]} in the checkpoint, {shapes[key]} in "
                    "this run" for key in shapes if key in saved_shapes
                    and saved_shapes[key] != shapes[key]]
        problems += [f"{key} is not in the checkpoint" for key in shapes if key not in saved_shapes]
        problems += [f"{key} is in the checkpoint, not in this run" for key in saved_shapes
                     if key not in shapes]
        if problems:
            shown = 8
            listed = "; ".join(problems[:shown])
            if len(problems) > shown:
                listed += f"; and {len(problems) - shown} more"
            raise CheckpointError(f"checkpoint step {step} in {self.root / 'latest'} holds another "
                                  f"model: {listed}. Resume with the config that wrote it, or "
                                  "start a new run in another workdir")

    def _verify(self, state: Any, meta: dict, step: int) -> None:
        saved = meta.get(CHECKSUMS)
        if saved is None:  # written before checksums were recorded: nothing to compare
            warnings.warn(f"checkpoint step {step} in {self.root / 'latest'} has no checksums "
                          "(written by an earlier version); its arrays were not verified",
                          stacklevel=3)
            return
        computed = array_checksums(state)
        for path, value in computed.items():
            if saved.get(path) != value:
                raise CheckpointError(
                    f"checkpoint step {step} in {self.root / 'latest'}: array {path} does not match "
                    f"the checksum saved with it (saved {saved.get(path)}, read {value}): the "
                    f"checkpoint is corrupted{self._older_hint(step)}")

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        self.best.close()

