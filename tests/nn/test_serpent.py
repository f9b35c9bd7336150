"""SeRpEntBlock: parameters carry logical axes, padding never reaches valid outputs, and the
block runs under jit + vmap and inside a sharded, jitted train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ssmjax.nn.serpent import INNER_SSMS, SeRpEntBlock, make_inner_ssm, register_inner_ssm
from ssmjax.train.optim import OptimizerConfig, make_optimizer
from ssmjax.train.sharding import batch_sharding, make_mesh, state_shardings

D_MODEL, LENGTH = 12, 20
TINY_SSM = {"mamba": dict(d_state=4), "s4": dict(d_state=4, bidirectional=True),
            "s4d": dict(d_state=4, bidirectional=True), "s5": dict(d_state=4), "liquid_s4": dict(d_state=4)}


def make_block(ssm="mamba", norm="rms", rates=(2.0, 3.0), **kwargs):
    return SeRpEntBlock(D_MODEL, compression_rates=rates, window=3, num_basis=4, ssm=ssm,
                        ssm_kwargs=TINY_SSM[ssm], l_max=LENGTH, norm=norm, rngs=nnx.Rngs(0),
                        **kwargs)


def inputs(batch=3, seed=0):
    x = jax.random.normal(jax.random.key(seed), (batch, LENGTH, D_MODEL))
    lengths = jnp.asarray([LENGTH, 13, 6, 17][:batch])
    return x, jnp.arange(LENGTH) < lengths[:, None]


def jitted_apply(block):
    """``(state, x, mask) → out`` on a merged copy (BatchNorm's statistic updates are dropped)."""
    graphdef, state = nnx.split(block)
    return state, jax.jit(lambda state, x, mask: nnx.merge(graphdef, state)(x, mask=mask)[0])


@pytest.fixture(scope="module")
def mamba_rms():
    """A Mamba-inner, RMS-normalised block and its jitted apply, shared by the tests below so
    that each shape compiles once."""
    block = make_block("mamba", "rms")
    return (block, *jitted_apply(block))


@pytest.mark.parametrize("ssm", sorted(TINY_SSM))
def test_every_parameter_has_logical_axes(ssm):
    block = make_block(ssm, norm="batch", rates=(2.0,), decompress_window=2)
    variables = nnx.to_flat_state(nnx.state(block, (nnx.Param, nnx.BatchStat)))
    assert len(variables) > 10
    for path, variable in variables:
        names = variable.get_metadata().get("logical_axes")
        assert names is not None and len(names) == variable.get_value().ndim, path


def test_configuration_errors_name_the_argument(mamba_rms):
    with pytest.raises(ValueError, match="ssm is 'transformer'"):
        make_inner_ssm("transformer", 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="ssm is 'lstm'"):
        SeRpEntBlock(12, ssm="lstm", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="l_max"):
        SeRpEntBlock(12, ssm="s4", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="d_model is 10"):
        SeRpEntBlock(10, compression_rates=(2.0, 4.0), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="compression_rates"):
        SeRpEntBlock(12, compression_rates=(0.5, 2.0), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="already registered"):
        register_inner_ssm("mamba", INNER_SSMS["mamba"])
    with pytest.raises(ValueError, match="mask has shape"):
        mamba_rms[0](jnp.zeros((2, LENGTH, D_MODEL)), mask=jnp.ones((2, LENGTH - 1), bool))


@pytest.mark.parametrize("ssm,norm", [("mamba", "rms"), ("s4d", "batch")])
def test_padding_never_reaches_valid_outputs(ssm, norm, mamba_rms):
    """Right padding filled with large noise leaves every valid output as it was; the S4D
    case is bidirectional and batch-normalised, the two ways padding could leak, and
    decompresses with the general kNN form."""
    state, apply = (mamba_rms[1:] if ssm == "mamba"
                    else jitted_apply(make_block(ssm, norm, decompress_window=2)))
    x, mask = inputs()
    noisy = jnp.where(mask[..., None], x, 100.0 * jax.random.normal(jax.random.key(9), x.shape))
    clean_out, noisy_out = np.asarray(apply(state, x, mask)), np.asarray(apply(state, noisy, mask))
    mask = np.asarray(mask)
    assert np.all(np.isfinite(clean_out)) and np.abs(clean_out[mask]).min() > 0
    np.testing.assert_allclose(noisy_out[mask], clean_out[mask], rtol=0, atol=1e-6)
    assert np.all(noisy_out[~mask] == 0)


def test_runs_under_jit_and_vmap(mamba_rms):
    _, state, apply = mamba_rms
    x, mask = inputs()
    stacked_x = jnp.stack([x, x[::-1]])
    stacked_mask = jnp.stack([mask, mask[::-1]])
    vmapped = jax.jit(jax.vmap(apply, in_axes=(None, 0, 0)))(state, stacked_x, stacked_mask)
    assert vmapped.shape == (2, 3, LENGTH, D_MODEL)
    for index in range(2):
        np.testing.assert_allclose(vmapped[index], apply(state, stacked_x[index], stacked_mask[index]),
                                   rtol=1e-5, atol=1e-5)


def test_resampling_plans_describe_each_branch(mamba_rms):
    block = mamba_rms[0]
    x, mask = inputs()
    plans = nnx.jit(lambda block, x, mask: block.resampling_plans(x, mask=mask))(block, x, mask)
    assert len(plans) == 2
    for plan, rate in zip(plans, block.compression_rates):
        max_length = int(np.ceil(LENGTH / rate))
        assert plan.delta.shape == plan.times.shape == (3, LENGTH)
        assert plan.neighbours.shape == (3, max_length, 3) and plan.nearest.shape == (3, LENGTH)
        assert float(plan.delta.max()) < 1.0 / rate and np.all(np.asarray(plan.delta)[~np.asarray(mask)] == 0)
        assert np.all(np.asarray(plan.compressed_lengths) <= max_length)


def test_sharded_train_step_updates_every_branch():
    """A train-like step jitted with the parameter shardings of ``state_shardings`` on a
    one-device (data, fsdp, model) mesh: loss and Δ-projection gradients finite, the Δ
    projections receive gradient, BatchNorm statistics and parameters move. (S4D inside:
    the LRA setting, and the cheapest inner layer to compile.)"""
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    block = make_block("s4d", "batch", rates=(2.0,))
    optimizer = nnx.Optimizer(block, make_optimizer(OptimizerConfig(warmup_steps=0), 10, block),
                              wrt=nnx.Param)
    graphdef, state = nnx.split((block, optimizer))
    shardings = state_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    x, mask = inputs(batch=4)
    target = jax.random.normal(jax.random.key(2), x.shape)

    def train_step(state, batch):
        block, optimizer = nnx.merge(graphdef, state)

        def loss_fn(block):
            out, _ = block(batch["x"], mask=batch["mask"])
            return jnp.sum(jnp.where(batch["mask"][..., None], out - batch["target"], 0) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(block)
        optimizer.update(block, grads)
        branches = nnx.to_pure_dict(grads)["resampled"]
        delta_grads = [branch["delta_proj"]["kernel"] for branch in branches.values()]
        return nnx.state((block, optimizer)), {"loss": loss, "delta_grads": delta_grads}

    data = batch_sharding(mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    step = jax.jit(train_step, in_shardings=(shardings, data), out_shardings=(shardings, replicated))
    batch = jax.device_put({"x": x, "mask": mask, "target": target}, data)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(state))
    state, metrics = step(state, batch)
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert len(metrics["delta_grads"]) == 1
    for grad in metrics["delta_grads"]:
        assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).max()) > 0
    after = nnx.to_pure_dict(state)
    model_before, model_after = before[0], after[0]
    assert not np.allclose(model_before["norm"]["mean"], model_after["norm"]["mean"])
    for name in ("kernel", "bias"):
        old = model_before["resampled"][0]["delta_proj"][name]
        new = model_after["resampled"][0]["delta_proj"][name]
        assert not np.allclose(old, new)
        assert isinstance(new.sharding, NamedSharding) and new.sharding.mesh.shape == mesh.shape
