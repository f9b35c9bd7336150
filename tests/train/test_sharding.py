"""The sharded train step (data=2 × fsdp=4 on 8 simulated CPU devices) equals one device."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
from flax import nnx

from ssmjax.train import TrainingRun
from ssmjax.train.sharding import make_mesh, partition_spec
from tiny import tiny_config

SCRIPT = textwrap.dedent("""
    import jax, numpy as np, sys
    from flax import nnx
    sys.path.insert(0, {tests!r})
    from tiny import tiny_config
    from ssmjax.train import TrainingRun
    from ssmjax.train.sharding import make_mesh

    assert jax.device_count() == 8, jax.devices()
    config = tiny_config(batch_size=8)

    def three_steps(mesh):
        run = TrainingRun.create(config, mesh)
        losses = []
        for step in range(1, 4):
            metrics = run.run_steps(step, 1)
            losses.append(float(metrics["loss"]))
        model, _ = nnx.merge(run.graphdef, run.state)
        return run, losses, nnx.to_pure_dict(nnx.state(model, nnx.Param))

    sharded, sharded_losses, sharded_params = three_steps(make_mesh(data=2, fsdp=4))
    single, single_losses, single_params = three_steps(make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    in_proj = sharded.state[0]["layers"][0]["mixer"]["in_proj"]["kernel"]
    print("SPEC", in_proj.get_value().sharding.spec)
    flat_a = jax.tree.leaves(sharded_params)
    flat_b = jax.tree.leaves(single_params)
    worst = max(float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))
                for a, b in zip(flat_a, flat_b))
    loss_error = max(abs(a - b) / abs(b) for a, b in zip(sharded_losses, single_losses))
    print("RESULT", loss_error, worst, len(flat_a))
""")


def test_sharded_train_step_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    tests = str(pathlib.Path(__file__).parent)
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line[:4] in ("SPEC", "RESU"))
    assert "fsdp" in lines["SPEC"]  # the parameters really are sharded
    loss_error, param_error, count = lines["RESULT"].split()
    assert int(count) > 5
    assert float(loss_error) < 1e-5 and float(param_error) < 1e-5


def test_partition_spec_follows_metadata_and_divisibility():
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    assert partition_spec((8, 4), ("embed", "inner"), mesh) == jax.sharding.PartitionSpec("fsdp", "model")
    assert partition_spec((8,), None, mesh) == jax.sharding.PartitionSpec()


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
    from ssmjax.train.sharding import BATCH_AXES, jit_under_mesh, make_mesh

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
                              batch_axes=BATCH_AXES)
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
