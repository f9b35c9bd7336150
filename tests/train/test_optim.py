"""The optimiser: schedules, groups from parameter metadata, gradient accumulation, plateau."""

import logging

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ssmjax.nn.partitioning import axes
from ssmjax.train import TrainingRun, make_optimizer, parameter_groups
from ssmjax.train.optim import OptimizerConfig, learning_rate_schedule
from ssmjax.train.sharding import make_mesh
from tiny import tiny_config


class OneOfEachGroup(nnx.Module):
    """One parameter per optimiser group, and one without group metadata."""

    def __init__(self, rng: np.random.Generator):
        def value(*shape):
            return jnp.asarray(rng.standard_normal(shape), jnp.float32)

        self.matrix = nnx.Param(value(3, 4), **axes("embed", None, group="decay"))
        self.bias = nnx.Param(value(4), **axes(None, group="no_decay"))
        self.log_dt = nnx.Param(value(5), **axes("embed", group="ssm"))
        self.unmarked = nnx.Param(value(2, 2))


def test_groups_set_weight_decay_and_learning_rate(caplog):
    rng = np.random.default_rng(0)
    model = OneOfEachGroup(rng)
    config = OptimizerConfig(learning_rate=0.01, ssm_learning_rate=0.002, weight_decay=0.1,
                             schedule="constant", warmup_steps=0, grad_clip_norm=1e9)
    with caplog.at_level(logging.WARNING, logger="ssmjax.train.optim"):
        optimizer = nnx.Optimizer(model, make_optimizer(config, 10, model), wrt=nnx.Param)
    unmarked = [r.getMessage() for r in caplog.records if "no optimizer_group" in r.getMessage()]
    assert len(unmarked) == 1 and unmarked[0].endswith(": unmarked"), unmarked

    before = {k: np.asarray(v, np.float64) for k, v in nnx.to_pure_dict(nnx.state(model, nnx.Param)).items()}
    grads = {k: rng.standard_normal(v.shape) for k, v in before.items()}
    optimizer.update(model, _as_state(model, grads))
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))

    # AdamW's first step: bias-corrected moments are g and g², so the step is
    # lr · (g / (|g| + ε) + λ · θ), λ = 0 outside the "decay" group.
    def expected(name, learning_rate, decay):
        g, theta = grads[name], before[name]
        return theta - learning_rate * (g / (np.abs(g) + config.eps) + decay * theta)

    chex.assert_trees_all_close(after, {
        "matrix": expected("matrix", 0.01, 0.1), "bias": expected("bias", 0.01, 0.0),
        "log_dt": expected("log_dt", 0.002, 0.0), "unmarked": expected("unmarked", 0.01, 0.1)},
        rtol=1e-5, atol=1e-7)


def _as_state(model, arrays):
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()})
    return state


def test_groups_come_from_metadata_and_bad_groups_are_named():
    model = OneOfEachGroup(np.random.default_rng(1))
    assert parameter_groups(model) == {("matrix",): "decay", ("bias",): "no_decay",
                                       ("log_dt",): "ssm", ("unmarked",): "decay"}
    model.bias = nnx.Param(jnp.zeros(3), optimizer_group="fast")
    with pytest.raises(ValueError, match="parameter bias has optimizer_group 'fast', expected one of"):
        parameter_groups(model)


def test_schedule_warms_up_then_decays():
    schedule = learning_rate_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=10,
                                                      min_lr_ratio=0.1), total_steps=100)
    assert float(schedule(0)) == 0.0 and abs(float(schedule(10)) - 1.0) < 1e-6
    assert abs(float(schedule(100)) - 0.1) < 1e-6 and float(schedule(50)) < 1.0
    ssm = learning_rate_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=10), 100, peak=0.25)
    assert abs(float(ssm(50)) - 0.25 * float(schedule(50))) < 1e-7  # the same shape, scaled


def test_gradient_accumulation_equals_the_full_batch():
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    results = []
    for accumulate in (1, 4):
        run = TrainingRun.create(tiny_config(grad_accum_steps=accumulate), mesh)
        for step in (1, 2):
            metrics = run.run_steps(step, 1)
        model, _ = nnx.merge(run.graphdef, run.state)
        results.append((float(metrics["loss"]), nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    chex.assert_trees_all_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-6)


def test_plateau_schedule_trains():
    run = TrainingRun.create(tiny_config(optimizer=OptimizerConfig(schedule="plateau", warmup_steps=1)),
                             make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    metrics = run.run_steps(1, 1)
    assert np.isfinite(float(metrics["loss"]))


def test_optimiser_state_keeps_the_layout_of_optax_adamw():
    """Checkpoints written before parameters had groups hold optax.adamw's state: the grouped
    optimiser nests its parts the same way, so they still resume."""
    model = OneOfEachGroup(np.random.default_rng(0))
    params = nnx.state(model, nnx.Param)
    config = OptimizerConfig(schedule="constant", warmup_steps=0)
    grouped = make_optimizer(config, 10, model).init(params)
    before = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                         optax.adamw(learning_rate_schedule(config, 10),
                                     weight_decay=config.weight_decay,
                                     mask=lambda p: jax.tree.map(lambda _: True, p))).init(params)
    assert jax.tree.structure(grouped) == jax.tree.structure(before)
