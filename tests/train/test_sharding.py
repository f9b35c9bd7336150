"""Sharding: the model initialised into its shardings, the sharded train step (data=2 × fsdp=4 on
8 simulated CPU devices, on-device and host batches) equal to one device, rules from the config."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from ssmjax.nn.partitioning import axes
from ssmjax.train import TrainingRun, batch_mesh_axes
from ssmjax.train.sharding import (MESH_AXES, batch_sharding, make_mesh, partition_spec,
                                   replicated_axes)
from tiny import tiny_config

SCRIPT = textwrap.dedent("""
    import logging, jax, numpy as np, sys
    from flax import nnx
    sys.path.insert(0, {tests!r})
    from tiny import host_token_config, tiny_config
    from ssmjax.train import TrainingRun, override
    from ssmjax.train.loop import build_model
    from ssmjax.train.sharding import make_mesh

    assert jax.device_count() == 8, jax.devices()

    def params(run):
        return nnx.state(nnx.merge(run.graphdef, run.state)[0], nnx.Param)

    def worst(a, b):
        return max(float(np.linalg.norm(np.asarray(x) - np.asarray(y)) / np.linalg.norm(np.asarray(y)))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    def three_steps(config, mesh, per_call=1):
        run = TrainingRun.create(config, mesh)
        losses = []
        for step in range(1, 4, per_call):
            metrics = run.run_steps(step, min(per_call, 4 - step))
            losses.append(float(metrics["loss"]))
        return run, losses, nnx.to_pure_dict(params(run))

    config = tiny_config(batch_size=8)
    sharded_mesh, single_mesh = make_mesh(data=2, fsdp=4), make_mesh(1, 1, 1, devices=jax.devices()[:1])

    # Initialised under jit into its shardings: each device holds a quarter of in_proj, and
    # the values are the eager constructor's.
    created = TrainingRun.create(config, sharded_mesh)
    kernel = created.state[0]["layers"][0]["mixer"]["in_proj"]["kernel"].get_value()
    print("INIT", "fsdp" in str(kernel.sharding.spec), kernel.addressable_shards[0].data.shape[0],
          kernel.shape[0], worst(nnx.to_pure_dict(params(created)),
                                 nnx.to_pure_dict(nnx.state(build_model(config), nnx.Param))))

    sharded, sharded_losses, sharded_params = three_steps(config, sharded_mesh)
    single, single_losses, single_params = three_steps(config, single_mesh)
    in_proj = sharded.state[0]["layers"][0]["mixer"]["in_proj"]["kernel"]
    print("SPEC", in_proj.get_value().sharding.spec)
    loss_error = max(abs(a - b) / abs(b) for a, b in zip(sharded_losses, single_losses))
    print("RESULT", loss_error, worst(sharded_params, single_params), len(jax.tree.leaves(sharded_params)))

    # Host batches placed on the mesh, two steps stacked per call, equal one device's.
    host = host_token_config(steps_per_call=2, log_every=2, eval_every=4, checkpoint_every=4)
    _, host_sharded, host_sharded_params = three_steps(host, sharded_mesh, per_call=2)
    _, host_single, host_single_params = three_steps(host, single_mesh, per_call=2)
    print("HOST", max(abs(a - b) / abs(b) for a, b in zip(host_sharded, host_single)),
          worst(host_sharded_params, host_single_params))

    # A width that fsdp = 4 does not divide stays replicated, one logged line per axis.
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("ssmjax.train").addHandler(handler)
    TrainingRun.create(override(config, {{"model.d_model": 10}}), sharded_mesh)
    lines = [r.getMessage() for r in records if "is replicated" in r.getMessage()]
    print("FALLBACKS", len(lines), lines[0])
""")


def test_sharded_train_step_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    tests = str(pathlib.Path(__file__).parent)
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines()
                 if line.split(" ")[0] in ("INIT", "SPEC", "RESULT", "HOST", "FALLBACKS"))
    assert "fsdp" in lines["SPEC"]  # the parameters really are sharded
    sharded_at_init, shard_rows, rows, init_error = lines["INIT"].split()
    assert sharded_at_init == "True" and (int(shard_rows), int(rows)) == (4, 16)
    assert float(init_error) < 1e-6
    loss_error, param_error, count = lines["RESULT"].split()
    assert int(count) > 5
    assert float(loss_error) < 1e-5 and float(param_error) < 1e-5
    host_loss_error, host_param_error = lines["HOST"].split()
    assert float(host_loss_error) < 1e-5 and float(host_param_error) < 1e-5
    count, first = lines["FALLBACKS"].split(" ", 1)
    assert int(count) >= 3, lines["FALLBACKS"]
    assert "axis 1 ('embed', size 10) is replicated: mesh axes fsdp = 4 do not divide it" in first


def test_partition_spec_follows_metadata_and_divisibility():
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    assert partition_spec((8, 4), ("embed", "inner"), mesh) == P("fsdp", "model")
    assert partition_spec((8,), None, mesh) == P()
    pod = AbstractMesh((2, 4, 1), MESH_AXES)
    rules = (("embed", ("data", "fsdp")), ("inner", "fsdp"))
    assert partition_spec((16, 12), ("embed", "inner"), pod, rules) == P(("data", "fsdp"), None)
    assert partition_spec((12, 16), ("embed", "inner"), pod, rules) == P(None, "fsdp")


def test_replicated_axes_are_named_one_line_each():
    class Layer(nnx.Module):
        def __init__(self):
            self.kernel = nnx.Param(jnp.zeros((10, 8)), **axes("embed", "inner", group="decay"))
            self.scale = nnx.Param(jnp.zeros((8,)), **axes("embed", group="no_decay"))
            self.square = nnx.Param(jnp.zeros((8, 8)), **axes("embed", "embed", group="decay"))

    lines = replicated_axes(nnx.state(Layer(), nnx.Param), AbstractMesh((2, 4, 1), MESH_AXES))
    assert lines == [
        "kernel: axis 0 ('embed', size 10) is replicated: mesh axes fsdp = 4 do not divide it",
        "square: axis 1 ('embed', size 8) is replicated: mesh axes fsdp already shard another of "
        "its axes"]


def test_the_batch_axes_come_from_the_rules():
    assert batch_mesh_axes() == ("data", "fsdp")
    assert batch_mesh_axes((("batch", "data"), ("embed", "fsdp"))) == ("data",)
    assert batch_mesh_axes((("embed", "fsdp"),)) == ()
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    assert batch_sharding(mesh).spec == P(("data", "fsdp"))
    assert batch_sharding(mesh, (("batch", "data"),), stacked=True).spec == P(None, ("data",))


def test_every_parameter_has_logical_axes():
    run = TrainingRun.create(tiny_config(), make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    model, _ = nnx.merge(run.graphdef, run.state)
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = variable.get_metadata().get("logical_axes")
        assert names is not None and len(names) == variable.get_value().ndim, path


PALLAS_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from ssmjax.ops import selective_scan
    from ssmjax.train.sharding import batch_mesh_axes, jit_under_mesh, make_mesh

    mesh = make_mesh(data=2, fsdp=2)
    rng = np.random.default_rng(0)
    b, l, d, n = 4, 9, 16, 4
    u, delta, z = (jnp.asarray(rng.standard_normal((b, l, d)), jnp.float32) for _ in range(3))
    A = -jnp.exp(jnp.asarray(rng.standard_normal((d, n)), jnp.float32))
    B, C = (jnp.asarray(rng.standard_normal((b, l, 2, n)), jnp.float32) for _ in range(2))
    D, delta_bias = (jnp.asarray(rng.standard_normal((d,)), jnp.float32) for _ in range(2))
    h0 = jnp.asarray(rng.standard_normal((b, d, n)), jnp.float32)
    args = (u, delta, A, B, C, D, z, delta_bias, h0)

    def loss(backend, *args):
        u, delta, A, B, C, D, z, delta_bias, h0 = args
        y, h = selective_scan(u, delta, A, B, C, D, z, delta_bias, True, h0, True, backend=backend,
                              batch_axes=batch_mesh_axes())
        return jnp.sum(y ** 2) + jnp.sum(h ** 2)

    grads = lambda backend: jax.value_and_grad(lambda *a: loss(backend, *a), argnums=range(9))
    reference = jax.jit(grads("sequential"))(*args)
    split = NamedSharding(mesh, P(("data", "fsdp")))
    sharded = tuple(jax.device_put(a, split if a.shape[0] == b and a.ndim >= 3
                                   else NamedSharding(mesh, P())) for a in args)
    result = jit_under_mesh(grads("pallas"), mesh)(*sharded)
    with jax.set_mesh(mesh):
        print("SHARD_MAP", "shard_map" in str(jax.make_jaxpr(grads("pallas"))(*sharded)))
    print("WORST", max(float(jnp.linalg.norm(r - o) / jnp.linalg.norm(r))
                       for r, o in zip(jax.tree.leaves(reference), jax.tree.leaves(result))))
""")


def test_pallas_scan_splits_over_the_batch_axes_of_the_mesh():
    """Under a mesh the opaque Pallas call runs once per batch shard (shard_map), and its value
    and gradients (replicated A, D, Δ bias summed over shards) equal the sequential scan's."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", PALLAS_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["SHARD_MAP"] == "True"
    assert float(lines["WORST"]) < 1e-5
