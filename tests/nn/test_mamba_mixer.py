"""MambaMixer: mamba-ssm's initialisation, and its sequence and step forms agreeing."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import relative_error
from ssmjax.nn import MambaMixer, RMSNorm


def make_mixer(**kwargs):
    return MambaMixer(24, d_state=8, rngs=nnx.Rngs(0), **kwargs)


def test_initialisation_follows_mamba():
    mixer = MambaMixer(64, d_state=16, dt_min=0.001, dt_max=0.1, rngs=nnx.Rngs(3))
    assert mixer.d_inner == 128 and mixer.dt_rank == math.ceil(64 / 16)
    np.testing.assert_allclose(jnp.exp(mixer.A_log[...]), np.tile(np.arange(1, 17), (128, 1)), rtol=1e-6)
    np.testing.assert_array_equal(mixer.D[...], np.ones(128))
    dt = jax.nn.softplus(mixer.dt_bias[...])
    assert float(dt.min()) >= 0.001 * (1 - 1e-5) and float(dt.max()) <= 0.1 * (1 + 1e-5)
    log_dt = np.log(np.asarray(dt))  # log-uniform: spread across the whole log range
    assert log_dt.min() < math.log(0.003) and log_dt.max() > math.log(0.03)
    bound = mixer.dt_rank ** -0.5
    assert float(jnp.abs(mixer.dt_proj.kernel[...]).max()) <= bound
    assert float(jnp.abs(mixer.conv_weight[...]).max()) <= 0.5  # 1/sqrt(d_conv)
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None
    assert mixer.conv_weight[...].shape == (128, 4) and mixer.conv_bias[...].shape == (128,)


def test_sequence_equals_steps_and_prefill_continues():
    mixer = make_mixer()
    x = jax.random.normal(jax.random.key(1), (2, 10, 24))
    full, cache = mixer(x, return_cache=True)
    state = mixer.init_cache(2)
    for t in range(10):
        out_t, state = mixer.step(x[:, t], state)
        assert relative_error(out_t, full[:, t]) < 1e-5
    assert relative_error(state.ssm_state, cache.ssm_state) < 1e-5
    np.testing.assert_array_equal(state.conv_state, cache.conv_state)
    # A prefill of the first 6 positions continued by a parallel pass over the rest.
    _, prefix_cache = mixer(x[:, :6], return_cache=True)
    rest, no_cache = mixer(x[:, 6:], cache=prefix_cache)
    assert no_cache is None
    assert relative_error(rest, full[:, 6:]) < 1e-5


@pytest.mark.parametrize("backend", ["sequential", "associative", "chunked"])
def test_backends_agree_inside_the_mixer(backend):
    x = jax.random.normal(jax.random.key(2), (2, 19, 24))
    expected, _ = make_mixer(scan_backend="sequential")(x)
    assert relative_error(make_mixer(scan_backend=backend, chunk_size=4)(x)[0], expected) < 1e-5


def test_bfloat16_compute_keeps_float32_params():
    mixer = make_mixer(dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(4), (2, 9, 24))
    out, _ = mixer(x)
    assert out.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(mixer, nnx.Param)))
    assert relative_error(out, make_mixer()(x)[0]) < 2e-2


def test_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"hidden has shape \(2, 5, 7\), expected \(batch, length, 24\)"):
        make_mixer()(jnp.ones((2, 5, 7)))


def test_rms_norm_matches_formula():
    x = jax.random.normal(jax.random.key(5), (3, 16)) * 3.0
    norm = RMSNorm(16, eps=1e-5)
    norm.weight[...] = jnp.linspace(0.5, 1.5, 16)
    x64 = np.asarray(x, np.float64)
    expected = x64 / np.sqrt(np.mean(x64**2, -1, keepdims=True) + 1e-5) * np.linspace(0.5, 1.5, 16)
    assert relative_error(norm(x), expected) < 1e-6
