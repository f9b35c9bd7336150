"""The training loop: jit-compiled, sharded train steps over an NNX model and optimiser.

config → the model and its objective by the model config's type (``ssmjax.train.registry``)
→ model and optimiser state initialised under ``jax.jit`` straight into their shardings →
``train_calls`` (``jax.jit`` with in/out shardings of a ``lax.scan`` over ``steps_per_call``
steps) → each step: its batch (drawn on device, or read on the host ahead of time and placed
on the mesh, ``ssmjax.train.feed``) → model → objective → gradients (accumulated over
micro-batches) → Optax update → metrics (JSONL, TensorBoard, progress bar) → Orbax checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import signal
import threading
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssmjax.data.source import BatchSource
from ssmjax.models import count_params
from ssmjax.train.checkpoint import Checkpointer
from ssmjax.train.config import (ExperimentConfig, changed_resumable_keys, config_json,
                                 describe_differences, run_differences)
from ssmjax.train.feed import (TRAIN_SPLIT, call_batches, call_plan, host_evaluation_batches,
                               host_training_calls, is_host_task)
from ssmjax.train.logging import RunLogger, plot_curves, read_metrics, summary_table
from ssmjax.train.objectives import TOKEN, Objective, lower_is_better
from ssmjax.train.optim import learning_rate_schedule, make_optimizer
from ssmjax.train.registry import model_entry
from ssmjax.train.sharding import (batch_sharding, check_batch_divisible, jit_under_mesh,
                                   make_mesh, replicated_axes, state_shardings)

log = logging.getLogger(__name__)


def build_model(config: ExperimentConfig) -> nnx.Module:
    """The experiment's model, initialised eagerly from ``train.seed`` (on the default device)."""
    return model_entry(config.model).build(config.model, rngs=nnx.Rngs(params=config.train.seed))


def batch_key(config: ExperimentConfig, step: int | jax.Array) -> jax.Array:
    """The on-device data of step ``step`` is a function of the seed and the step alone, so the
    data position of a resumed run is its step."""
    return jax.random.fold_in(jax.random.key(config.train.seed + 1), step)


def make_train_step(graphdef: Any, grad_accum_steps: int, objective: Objective = TOKEN):
    """``(state, batch) → (state, metrics)``; the objective's sums are added over
    ``grad_accum_steps`` micro-batches and the gradients divided by the summed ``count``, so
    accumulation computes exactly the full batch's update."""

    def train_step(state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        model_graph, params, others = nnx.split(model, nnx.Param, ...)

        def loss_sum(params, batch):
            sums = objective.sums(nnx.merge(model_graph, params, others), batch, False)
            return sums["loss_sum"], sums

        # A pure function of the parameters, so it can run inside lax.scan below.
        grad_fn = jax.value_and_grad(loss_sum, has_aux=True)
        if grad_accum_steps == 1:
            (_, sums), grads = grad_fn(params, batch)
        else:
            micro_batches = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape(-1, grad_accum_steps, *x.shape[1:]), 0, 1), batch)

            def accumulate(carry, micro_batch):
                (_, sums), grads = grad_fn(params, micro_batch)
                return jax.tree.map(jnp.add, carry, (sums, grads)), None

            first = jax.tree.map(lambda x: x[0], micro_batches)
            shapes = jax.eval_shape(lambda: (grad_fn(params, first)[0][1], params))
            init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            (sums, grads), _ = jax.lax.scan(accumulate, init, micro_batches)
        scale = 1.0 / jnp.maximum(sums["count"], 1)
        grads = jax.tree.map(lambda g: g * scale, grads)
        optimizer.update(model, grads, value=sums["loss_sum"] * scale)
        metrics = {**objective.metrics(sums), "grad_norm": optax.tree.norm(grads)}
        return nnx.state((model, optimizer)), metrics

    return train_step


def make_train_calls(train_step: Any, batch_at_step: Any):
    """``(state, first_step, count) → (state, metrics of the last step)``: ``count`` steps
    (static) in one ``lax.scan``, the batch of step ``s`` drawn on device by
    ``batch_at_step(s)``."""

    def train_calls(state, first_step, count):
        def one_step(state, step):
            return train_step(state, batch_at_step(step))

        state, metrics = jax.lax.scan(one_step, state, first_step + jnp.arange(count))
        return state, jax.tree.map(lambda m: m[-1], metrics)

    return train_calls


def make_host_train_calls(train_step: Any):
    """``(state, batches) → (state, metrics of the last step)``: one step per leading index of
    the stacked ``batches (count, batch, ...)``, in one ``lax.scan``."""

    def train_calls(state, batches):
        state, metrics = jax.lax.scan(train_step, state, batches)
        return state, jax.tree.map(lambda m: m[-1], metrics)

    return train_calls


def make_eval_step(graphdef: Any, objective: Objective = TOKEN):
    """``(state, batch) → the objective's sums`` over the batch (weighted by ``weight``)."""

    def eval_step(state, batch):
        model, _ = nnx.merge(graphdef, state)
        return objective.sums(model, batch, True)

    return eval_step


def initial_state(config: ExperimentConfig, mesh: Mesh) -> tuple[Any, Any, Any]:
    """``(graphdef, state, shardings)`` of the experiment's model and optimiser.

    The state is built by one jitted constructor whose outputs have the parameters' shardings
    (from ``nnx.eval_shape``'s abstract state and the logical-axis rules), so every device makes
    only its own shards and a model larger than one device's memory never sits whole on one.
    """
    train = config.train
    entry = model_entry(config.model)

    def build():
        return entry.build(config.model, rngs=nnx.Rngs(params=train.seed))

    abstract_model = nnx.eval_shape(build)
    tx = make_optimizer(train.optimizer, train.steps, abstract_model)

    def construct():
        model = build()
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    graphdef, abstract_state = nnx.split(nnx.eval_shape(construct))
    rules = train.logical_axis_rules
    for line in replicated_axes(nnx.state(abstract_model, nnx.Param), mesh, rules):
        log.warning("%s: parameter %s", config.name, line)
    shardings = state_shardings(abstract_state, mesh, rules)
    with jax.set_mesh(mesh):
        state = jax.jit(lambda: nnx.split(construct())[1], out_shardings=shardings)()
    return graphdef, state, shardings


@dataclasses.dataclass
class TrainingRun:
    """A model, its optimiser and the jitted, sharded steps, ready to train or restore.

    ``source`` is the training :class:`BatchSource` of a host task (``None`` for on-device
    tasks, whose ``make_batch(key)`` draws a batch on device instead).
    """

    config: ExperimentConfig
    mesh: Mesh
    graphdef: Any
    state: Any
    shardings: Any
    objective: Objective
    train_calls: Any
    eval_step: Any
    make_batch: Any
    source: BatchSource | None

    @classmethod
    def create(cls, config: ExperimentConfig, mesh: Mesh | None = None) -> TrainingRun:
        train = config.train
        rules = train.logical_axis_rules
        mesh = mesh or make_mesh(train.mesh_data, train.mesh_fsdp, train.mesh_model)
        check_batch_divisible(train.batch_size // train.grad_accum_steps, mesh, rules)
        objective = model_entry(config.model).objective
        graphdef, state, shardings = initial_state(config, mesh)
        data_sharding = batch_sharding(mesh, rules)
        replicated = NamedSharding(mesh, PartitionSpec())
        train_step = make_train_step(graphdef, train.grad_accum_steps, objective)
        if is_host_task(config.task):
            source = config.task.source(TRAIN_SPLIT, train.batch_size, seed=train.seed + 1)
            make_batch = None
            train_calls = jit_under_mesh(
                make_host_train_calls(train_step), mesh,
                in_shardings=(shardings, batch_sharding(mesh, rules, stacked=True)),
                out_shardings=(shardings, replicated), donate_argnums=0)
        else:
            source = None

            def draw_batch(key):
                batch = config.task.batch(key, train.batch_size)
                return jax.lax.with_sharding_constraint(batch, data_sharding)

            train_calls = jit_under_mesh(
                make_train_calls(train_step, lambda step: draw_batch(batch_key(config, step))),
                mesh, in_shardings=(shardings, replicated), out_shardings=(shardings, replicated),
                static_argnums=2, donate_argnums=0)
            make_batch = jit_under_mesh(draw_batch, mesh, out_shardings=data_sharding)
        eval_step = jit_under_mesh(make_eval_step(graphdef, objective), mesh,
                                   in_shardings=(shardings, data_sharding), out_shardings=replicated)
        return cls(config, mesh, graphdef, state, shardings, objective, train_calls, eval_step,
                   make_batch, source)

    @property
    def _rules(self):
        return self.config.train.logical_axis_rules

    def host_batches(self, first_step: int, count: int) -> dict[str, jax.Array]:
        """The stacked batches ``(count, batch, ...)`` of steps ``first_step …`` of a host task,
        read now and placed on the mesh."""
        return call_batches(self.source, first_step, count, self.objective.batch_keys,
                            batch_sharding(self.mesh, self._rules, stacked=True))

    def training_inputs(self, plan: Sequence[tuple[int, int]]) -> Iterator[Any]:
        """What :meth:`run_steps` takes for each call of ``plan``: ``None`` for on-device tasks;
        for host tasks their stacked batches, read and placed ahead on a background thread
        (closing the iterator stops it)."""
        if self.source is None:
            yield from (None for _ in plan)
            return
        yield from host_training_calls(self.source, plan, self.objective.batch_keys,
                                       batch_sharding(self.mesh, self._rules, stacked=True))

    def run_steps(self, first_step: int, count: int,
                  batches: dict[str, jax.Array] | None = None) -> dict[str, jax.Array]:
        """Trains steps ``first_step … first_step + count − 1``; the metrics of the last.

        A host task's ``batches`` come from :meth:`training_inputs` (read here when ``None``).
        """
        if self.source is None:
            self.state, metrics = self.train_calls(self.state, jnp.int32(first_step), count)
            return metrics
        if batches is None:
            batches = self.host_batches(first_step, count)
        self.state, metrics = self.train_calls(self.state, batches)
        return metrics

    def evaluation_batches(self) -> Iterator[dict[str, jax.Array]]:
        """On-device tasks: ``eval_batches`` held-out batches (the same ones every time); host
        tasks: a pass over ``eval_split`` (its first ``eval_batches`` batches, if set)."""
        train = self.config.train
        if self.source is None:
            eval_key = jax.random.key(train.seed + 2)
            return (self.make_batch(jax.random.fold_in(eval_key, index))
                    for index in range(train.eval_batches))
        data = self.config.task.evaluation_data(train.eval_split)
        return host_evaluation_batches(data, train.batch_size, self.objective.batch_keys,
                                       batch_sharding(self.mesh, self._rules), train.eval_batches)

    def evaluate(self) -> dict[str, float]:
        """The objective's metrics (``eval_loss``, ``eval_accuracy``, ...) over
        :meth:`evaluation_batches`, every example weighed once."""
        totals: dict[str, float] = {}
        for batch in self.evaluation_batches():
            for name, value in self.eval_step(self.state, batch).items():
                totals[name] = totals.get(name, 0.0) + float(value)
        if not totals:
            raise ValueError(f"{self.config.name}: the evaluation split "
                             f"{self.config.train.eval_split!r} holds no examples")
        return {name: float(value) for name, value in self.objective.metrics(totals, "eval_").items()}

    def checkpoint_state(self) -> dict:
        return nnx.to_pure_dict(self.state)

    def abstract_checkpoint_state(self) -> dict:
        shardings = nnx.to_pure_dict(self.shardings)
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            self.checkpoint_state(), shardings)

    def load_checkpoint_state(self, pure: dict) -> None:
        nnx.replace_by_pure_dict(self.state, pure)


@contextlib.contextmanager
def _stop_requests(signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> Iterator[list[int]]:
    """Collects the numbers of ``signals`` received while the block runs, instead of dying.

    SIGTERM is how schedulers, ``timeout`` and preemptible VMs ask a job to stop; recording it
    lets the loop finish its step and checkpoint first. Handlers can only be installed from
    the main thread, and with several JAX processes the hosts would stop at different steps
    (their collectives would then hang): in either case the signals keep their usual effect.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
        yield received
        return
    previous = {number: signal.signal(number, lambda signum, frame: received.append(signum))
                for number in signals}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _config_types(config: ExperimentConfig) -> dict[str, str]:
    """The type names of the model and task configs (their fields alone may not tell them apart)."""
    return {"model": type(config.model).__name__, "task": type(config.task).__name__}


def _check_resumable(config: ExperimentConfig, meta: dict, workdir: pathlib.Path) -> None:
    """Raises unless ``config`` may resume the checkpoint whose ``meta`` is given: the same
    settings up to :data:`~ssmjax.train.config.RESUMABLE_KEYS` (naming each key that differs,
    old → new), and a step not past ``train.steps``. Reports the resumable keys that changed."""
    differences = run_differences(meta["config"], config)
    for part, saved in meta.get("types", {}).items():
        if saved != _config_types(config)[part]:
            differences[f"{part} (type)"] = (saved, _config_types(config)[part])
    if differences:
        raise ValueError(f"--resume: the run in {workdir} was written with other settings "
                         f"({describe_differences(differences)}); resume it with its own, or start "
                         "a new run under another name")
    if meta["step"] > config.train.steps:
        raise ValueError(f"--resume: the run in {workdir} is at step {meta['step']}, past "
                         f"train.steps = {config.train.steps}; set train.steps to {meta['step']} "
                         "or more")
    changed = changed_resumable_keys(meta["config"], config)
    if changed and jax.process_index() == 0:
        print(f"{config.name}: resuming at step {meta['step']} with "
              f"{describe_differences(changed)}")


def train(config: ExperimentConfig, workdir: str | pathlib.Path, *, resume: bool = False,
          mesh: Mesh | None = None, stop_at_step: int | None = None,
          show_progress: bool = True) -> dict[str, float]:
    """Trains ``config`` in ``workdir``; returns the last evaluation's metrics.

    A SIGTERM during training (a scheduler's or ``timeout``'s stop request) ends the run after
    the current step with a checkpoint of that step, so that ``resume=True`` continues it;
    the run is then unfinished (:meth:`Checkpointer.latest_step` < ``config.train.steps``).
    (One JAX process only; see :func:`_stop_requests`.)

    Args:
        resume: continue from the latest checkpoint in ``workdir`` (required when one exists:
            a run never silently starts afresh over an earlier one, nor resumes unasked). The
            config must be the checkpoint's up to :data:`ssmjax.train.config.RESUMABLE_KEYS`;
            raising ``train.steps`` extends a finished run.
        mesh: device mesh (default: from the config's mesh sizes over all devices).
        stop_at_step: return after this step as if the job had been preempted.
    """
    workdir = pathlib.Path(workdir)
    train_config = config.train
    best_metric = config.best_metric
    checkpointer = Checkpointer(workdir, keep_last=train_config.keep_checkpoints,
                                best_metric=best_metric,
                                best_mode="min" if lower_is_better(best_metric) else "max")
    try:
        # What the checkpoints allow is settled before the model is built: mistakes fail fast.
        if resume:
            _check_resumable(config, checkpointer.read_meta(), workdir)
        elif checkpointer.latest_step() is not None:
            raise ValueError(f"{workdir} already holds checkpoints (step "
                             f"{checkpointer.latest_step()}); pass --resume to continue that run, "
                             "or choose a new workdir")
        run = TrainingRun.create(config, mesh)
        start_step = 0
        if resume:
            pure, meta = checkpointer.restore(run.abstract_checkpoint_state())
            run.load_checkpoint_state(pure)
            start_step = meta["step"]
    except BaseException:
        checkpointer.close()
        raise

    is_main = jax.process_index() == 0
    logger = RunLogger(workdir, train_config.steps, start_step, enabled=is_main,
                       show_progress=show_progress)
    schedule = learning_rate_schedule(train_config.optimizer, train_config.steps)
    tokens_per_step = train_config.batch_size * config.task.sequence_length
    if is_main and start_step == 0:
        logger.progress.write(f"{config.name}: {count_params(nnx.merge(run.graphdef, run.state)[0]):,} "
                              f"parameters, mesh {dict(run.mesh.shape)}, {jax.device_count()} "
                              f"{jax.default_backend()} device(s)")
    elif is_main and start_step == train_config.steps:
        logger.progress.write(f"{config.name}: the run in {workdir} is complete at step "
                              f"{start_step}; raise train.steps to train it further")
    eval_metrics: dict[str, float] = {}
    plan = call_plan(start_step, train_config.steps, train_config.steps_per_call, stop_at_step)
    step = start_step
    with _stop_requests() as stop_requests, contextlib.closing(run.training_inputs(plan)) as inputs:
        for (first, count), batches in zip(plan, inputs):
            metrics = run.run_steps(first, count, batches)
            step = first + count - 1
            logger.advance(count)
            last = step == train_config.steps
            if step % train_config.log_every == 0 or last:
                logger.log(step, {**{k: float(v) for k, v in metrics.items()},
                                  "learning_rate": float(schedule(step - 1))}, tokens_per_step)
            if step % train_config.eval_every == 0 or last:
                eval_metrics = run.evaluate()
                logger.log(step, eval_metrics)
            stopping = bool(stop_requests) and not last
            if step % train_config.checkpoint_every == 0 or last or stopping:
                metrics_for_best = eval_metrics if step % train_config.eval_every == 0 or last else None
                checkpointer.save(step, run.checkpoint_state(),
                                  {"step": step, "data_position": step, "config": config_json(config),
                                   "types": _config_types(config)},
                                  metrics=metrics_for_best)
            if stopping:
                if is_main:
                    logger.progress.write(f"{config.name}: stopped by signal {stop_requests[0]} "
                                          f"after step {step} of {train_config.steps}; its "
                                          f"checkpoint is in {workdir}, resume to continue")
                break
        checkpointer.close()  # the last save completes before a second SIGTERM can end us
    logger.close()
    if is_main and step >= train_config.steps:
        records = read_metrics(workdir)
        plot_curves(records, workdir / "curves.png")
        print(summary_table(records))
        print(f"logs, TensorBoard events, checkpoints and curves.png in {workdir}")
    return eval_metrics
