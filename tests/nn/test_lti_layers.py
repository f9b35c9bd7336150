"""S4, Liquid-S4, S4D and S5 layers: the convolution (or scan) view against a float64 NumPy
loop over time with the discretised matrices, the step view against both, gradients of the
two views, prefill caches, initialisation and input checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import TOLERANCE, compiled_module, real_view, relative_error
from ssmjax.nn.lti import LTICache, log_uniform_steps
from ssmjax.nn.s4 import S4, LiquidS4
from ssmjax.nn.s4d import S4D
from ssmjax.nn.s5 import S5
from ssmjax.ops.hippo import hippo_legs_nplr, hippo_n_blocks, s4d_lin_eigenvalues

BATCH, LENGTH, WIDTH, STATE, L_MAX = 2, 8, 3, 6, 8
# Every view (Cauchy sums + FFT, the dense recurrence behind C̄ = C̃ (I − Ā^{l_max})⁻¹, the
# scans) and every gradient lands within ~2e-6 of its reference here: the float32 bound holds.
F32 = TOLERANCE[jnp.float32]

HEADLESS = dict(activation=None, output="none")


def full(x):
    return np.concatenate([x, np.conj(x)], axis=-1)


def as_complex(pair):
    pair = np.asarray(pair, np.float64)
    return pair[..., 0] + 1j * pair[..., 1]


def diagonal_eigenvalues(layer):
    return -np.exp(np.asarray(layer.log_neg_lambda_real[...], np.float64)) + 1j * np.asarray(
        layer.lambda_imag[...], np.float64)


def discretise(Lambda, B, delta, method):
    if method == "zoh":
        Lambda_bar = np.exp(delta * Lambda)
        return Lambda_bar, (Lambda_bar - 1) / Lambda * B
    return (1 + delta * Lambda / 2) / (1 - delta * Lambda / 2), delta / (1 - delta * Lambda / 2) * B


def products(u, order):
    """U^{(q)}_k = u_k ⋯ u_{k−q+1} (zeros before the start), q = 1 … order: ``(order, b, L, h)``."""
    padded = np.concatenate([np.zeros((u.shape[0], order - 1, u.shape[2])), u], 1)
    return np.stack([np.stack([np.prod(padded[:, t + order - q:t + order], 1) for t in range(u.shape[1])], 1)
                     for q in range(1, order + 1)])


# --------------------------------------------------------------- float64 references


def dplr_reference(layer, u, direction=0, order=1, kernel="kb"):
    """S4 / Liquid-S4 as a loop over time with the dense bilinear matrices of A = Λ − P P*."""
    Lambda = diagonal_eigenvalues(layer)
    P, B = as_complex(layer.P[...])[:, 0], as_complex(layer.B[...])
    C = as_complex(layer.C[...])[direction]
    delta = np.exp(np.asarray(layer.log_dt[...], np.float64))
    U = products(u, order)
    y = np.zeros(u.shape)
    for h in range(u.shape[2]):
        A = np.diag(full(Lambda[h])) - np.outer(full(P[h]), full(P[h]).conj())
        eye = np.eye(A.shape[0])
        A_bar = np.linalg.solve(eye - delta[h] / 2 * A, eye + delta[h] / 2 * A)
        B_bar = np.linalg.solve(eye - delta[h] / 2 * A, delta[h] * full(B[h]))
        C_bar = full(C[h]) @ np.linalg.inv(eye - np.linalg.matrix_power(A_bar, layer.l_max))
        x = np.zeros((u.shape[0], A.shape[0]), complex)
        for k in range(u.shape[1]):
            drive = U[0, :, k, h, None] * B_bar
            liquid = np.zeros(u.shape[0])
            for q in range(2, order + 1):  # B̄^q elementwise in the eigenbasis
                if kernel == "kb":
                    drive = drive + U[q - 1, :, k, h, None] * B_bar**q
                else:
                    liquid = liquid + (C_bar @ B_bar**q).real * U[q - 1, :, k, h]
            x = x @ A_bar.T + drive
            y[:, k, h] = (x @ C_bar).real + liquid
    return y


def s4d_reference(layer, u, direction=0):
    Lambda = diagonal_eigenvalues(layer)
    delta = np.exp(np.asarray(layer.log_dt[...], np.float64))[:, None]
    Lambda_bar, B_bar = discretise(Lambda, as_complex(layer.B[...]), delta, layer.discretization)
    C = as_complex(layer.C[...])[direction]
    x, ys = np.zeros((u.shape[0], *Lambda.shape), complex), []
    for k in range(u.shape[1]):
        x = Lambda_bar * x + B_bar * u[:, k, :, None]
        ys.append(2 * np.einsum("hn,bhn->bh", C, x).real)
    return np.stack(ys, 1)


def s5_reference(layer, u, direction=0):
    Lambda = diagonal_eigenvalues(layer)
    delta = np.exp(np.asarray(layer.log_step[...], np.float64))
    Lambda_bar, B_bar = discretise(Lambda, as_complex(layer.B[...]), delta, layer.discretization)
    C = as_complex(layer.C[...])[direction]
    x, ys = np.zeros((u.shape[0], Lambda.shape[0]), complex), []
    for k in range(u.shape[1]):
        x = Lambda_bar * x + u[:, k] @ B_bar
        ys.append(2 * (x @ C.T).real)
    return np.stack(ys, 1)


def reference(layer, u, direction=0):
    """The SSM part of a headless layer (without D u) for one direction."""
    if isinstance(layer, S4D):
        return s4d_reference(layer, u, direction)
    if isinstance(layer, S5):
        return s5_reference(layer, u, direction)
    return dplr_reference(layer, u, direction, layer.liquid_order, layer.liquid_kernel)


def layer_reference(layer, u):
    """A headless layer's output: forward SSM, backward SSM on the reversed input, D skip."""
    y = reference(layer, u) + np.asarray(layer.D[...], np.float64) * u
    if layer.bidirectional:
        backward = reference(layer, u[:, ::-1], direction=1)[:, ::-1]
        if not isinstance(layer, S5):  # S4/S4D: the backward SSM is shifted to exclude u_t
            backward = np.concatenate([backward[:, 1:], np.zeros_like(backward[:, :1])], 1)
        y = y + backward
    return y


# ----------------------------------------------------------------------- layers


def perturb(layer, seed):
    """Moves the parameters off their initialisation (faster Δ, noisy B/P/C) for a sharper test."""
    rng = np.random.default_rng(seed)
    for name in ("B", "P", "C"):
        if hasattr(layer, name):
            value = getattr(layer, name)
            value[...] = value[...] + 0.3 * rng.normal(size=value[...].shape).astype(np.float32)
    steps = layer.log_step if isinstance(layer, S5) else layer.log_dt
    steps[...] = jnp.asarray(rng.uniform(math.log(0.05), math.log(0.5), steps[...].shape), jnp.float32)
    return layer


def make(kind, seed=0, **kwargs):
    rngs = nnx.Rngs(seed)
    if kind == "s4":
        layer = S4(WIDTH, l_max=L_MAX, d_state=STATE, rngs=rngs, **kwargs)
    elif kind == "liquid":
        layer = LiquidS4(WIDTH, l_max=L_MAX, d_state=STATE, rngs=rngs, **kwargs)
    elif kind == "s4d":
        layer = S4D(WIDTH, d_state=STATE, rngs=rngs, **kwargs)
    else:
        layer = S5(WIDTH, d_state=2 * STATE, rngs=rngs, **kwargs)
    return perturb(layer, seed)


def run_steps(layer, x):
    """The recurrent view: ``lax.scan`` of ``layer.step`` over time; outputs and final cache."""
    recurrence = layer.recurrence() if isinstance(layer, (S4, LiquidS4)) else None

    def step(cache, x_t):
        out, cache = (layer.step(x_t, cache, recurrence=recurrence) if recurrence is not None
                      else layer.step(x_t, cache))
        return cache, out

    cache, outs = jax.lax.scan(step, layer.init_cache(x.shape[0]), jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(outs, 0, 1), cache


@compiled_module
def both_views(layer, x, weights):
    """Outputs and parameter gradients of ``Σ weights · out`` by both views; a prefill of the
    first 3 positions continued by a parallel pass over the rest, with its final cache."""

    def conv_loss(layer):
        out, _ = layer(x)
        return jnp.sum(out * weights), out

    def step_loss(layer):
        outs, cache = run_steps(layer, x)
        return jnp.sum(outs * weights), (outs, cache)

    (_, conv), conv_grads = nnx.value_and_grad(conv_loss, has_aux=True)(layer)
    (_, (steps, step_cache)), step_grads = nnx.value_and_grad(step_loss, has_aux=True)(layer)
    _, prefix_cache = layer(x[:, :3], return_cache=True)
    continued, continued_cache = layer(x[:, 3:], cache=prefix_cache, return_cache=True)
    return conv, conv_grads, steps, step_cache, step_grads, continued, continued_cache


forward = compiled_module(lambda layer, x: layer(x)[0])
first_step = compiled_module(lambda layer, x_t: layer.step(x_t, layer.init_cache(x_t.shape[0])))


CAUSAL = {
    "s4": ("s4", {}),
    "liquid-pb3": ("liquid", dict(liquid_order=3, liquid_kernel="pb")),
    "liquid-kb3": ("liquid", dict(liquid_order=3, liquid_kernel="kb")),
    "s4d-lin-zoh": ("s4d", {}),
    "s5-zoh": ("s5", dict(blocks=2)),
}
BIDIRECTIONAL = {
    "s4": ("s4", {}),
    "liquid-pb2": ("liquid", dict(liquid_order=2, liquid_kernel="pb")),
    "liquid-kb3": ("liquid", dict(liquid_order=3, liquid_kernel="kb")),
    "s4d-inv-bilinear": ("s4d", dict(init="inv", discretization="bilinear")),
    "s5-bilinear": ("s5", dict(discretization="bilinear")),
}


def flat_grads(grads):
    return {"/".join(map(str, path)): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(grads)}


@pytest.mark.parametrize("name", list(CAUSAL))
def test_views_equal_the_float64_recurrence_and_each_other(name):
    kind, kwargs = CAUSAL[name]
    layer = make(kind, seed=len(name), **HEADLESS, **kwargs)
    keys = jax.random.split(jax.random.key(len(name)), 2)
    x = jax.random.normal(keys[0], (BATCH, LENGTH, WIDTH))
    weights = jax.random.normal(keys[1], (BATCH, LENGTH, WIDTH))
    conv, conv_grads, steps, step_cache, step_grads, continued, continued_cache = both_views(
        layer, x, weights)

    expected = layer_reference(layer, np.asarray(x, np.float64))
    assert relative_error(conv, expected) < F32
    assert relative_error(steps, expected) < F32
    assert relative_error(continued, expected[:, 3:]) < F32
    assert relative_error(real_view(continued_cache.state), real_view(step_cache.state)) < F32
    if isinstance(layer, LiquidS4):
        np.testing.assert_allclose(continued_cache.history, x[:, -(layer.liquid_order - 1):])
        np.testing.assert_allclose(step_cache.history, x[:, -(layer.liquid_order - 1):])
        # The liquid terms are a visible part of the output, not rounding.
        plain = dplr_reference(layer, np.asarray(x, np.float64))
        assert relative_error(plain, expected - np.asarray(layer.D[...]) * np.asarray(x)) > 1e-2

    conv_grads, step_grads = flat_grads(conv_grads), flat_grads(step_grads)
    assert conv_grads.keys() == step_grads.keys() and conv_grads
    for path, grad in conv_grads.items():
        assert np.all(np.isfinite(grad)), path
        assert relative_error(step_grads[path], grad) < F32, path


@pytest.mark.parametrize("name", list(BIDIRECTIONAL))
def test_bidirectional_conv_equals_two_float64_recurrences(name):
    """The only view of a bidirectional layer. (Its gradients go through the same kernel and
    FFT functions whose gradients the causal tests check.)"""
    kind, kwargs = BIDIRECTIONAL[name]
    layer = make(kind, seed=len(name) + 1, bidirectional=True, **HEADLESS, **kwargs)
    x = jax.random.normal(jax.random.key(len(name) + 1), (BATCH, LENGTH, WIDTH))
    expected = layer_reference(layer, np.asarray(x, np.float64))
    assert relative_error(forward(layer, x), expected) < F32
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(x[:, 0], layer.init_cache(BATCH))
    with pytest.raises(ValueError, match="bidirectional"):
        layer(x, return_cache=True)


# ----------------------------------------------------------- heads, dtypes, init


def test_output_heads_match_their_formulas():
    x = jax.random.normal(jax.random.key(9), (BATCH, 5, WIDTH))
    y = layer_reference(make("s4d", **HEADLESS), np.asarray(x, np.float64))  # same seed, same SSM
    gelu = 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
    for output in ("glu", "half_glu", "linear", "none"):
        layer = make("s4d", output=output)
        if output == "none":
            expected = gelu
        else:
            proj = layer.head.proj
            projected = gelu @ np.asarray(proj.kernel[...], np.float64) + np.asarray(proj.bias[...], np.float64)
            expected = {"glu": lambda: projected[..., :WIDTH] / (1 + np.exp(-projected[..., WIDTH:])),
                        "half_glu": lambda: gelu / (1 + np.exp(-projected)),
                        "linear": lambda: projected}[output]()
        assert relative_error(forward(layer, x), expected) < F32, output


def test_bfloat16_compute_keeps_float32_parameters_and_state():
    layer = make("s4d", dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(4), (BATCH, 5, WIDTH))
    out = forward(layer, x)
    assert out.shape == x.shape and out.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(layer, nnx.Param)))
    assert relative_error(out, forward(make("s4d"), x)) < TOLERANCE[jnp.bfloat16]
    out_0, cache = first_step(layer, x[:, 0])
    assert out_0.dtype == jnp.bfloat16 and cache.state.dtype == jnp.complex64
    assert relative_error(out_0, out[:, 0]) < TOLERANCE[jnp.bfloat16]


def test_initialisation_follows_the_papers():
    s4 = S4(WIDTH, l_max=L_MAX, d_state=STATE, rngs=nnx.Rngs(0))
    nplr = hippo_legs_nplr(STATE)
    half = STATE // 2
    np.testing.assert_allclose(diagonal_eigenvalues(s4), np.tile(nplr.Lambda[:half], (WIDTH, 1)), rtol=1e-6)
    np.testing.assert_allclose(as_complex(s4.P[...])[:, 0], np.tile(nplr.P[:half], (WIDTH, 1)), atol=1e-6)
    np.testing.assert_allclose(as_complex(s4.B[...]), np.tile(nplr.B[:half], (WIDTH, 1)), atol=1e-6)
    s4d = S4D(WIDTH, d_state=STATE, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(diagonal_eigenvalues(s4d), np.tile(s4d_lin_eigenvalues(STATE), (WIDTH, 1)),
                               atol=1e-6)
    np.testing.assert_array_equal(as_complex(s4d.B[...]), 1.0)
    s5 = S5(WIDTH, d_state=2 * STATE, blocks=2, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(diagonal_eigenvalues(s5), hippo_n_blocks(2 * STATE, 2)[0], rtol=1e-6)
    for log_dt in (s4.log_dt, s4d.log_dt, s5.log_step):
        dt = np.exp(np.asarray(log_dt[...]))
        assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    log_dt = np.asarray(log_uniform_steps(0.001, 0.1)(jax.random.key(1), (1000,)))
    assert log_dt.min() < math.log(0.0012) and log_dt.max() > math.log(0.08)  # the whole log range
    assert abs(np.mean(log_dt) - math.log(0.01)) < 0.2
    assert s4.head.proj.kernel[...].shape == (WIDTH, 2 * WIDTH)  # GLU: d → 2d
    assert s5.head.proj.kernel[...].shape == (WIDTH, WIDTH)      # half GLU: d → d


def test_bad_inputs_are_reported():
    s4 = S4(3, l_max=8, d_state=STATE, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"hidden has shape \(2, 5, 7\), expected \(batch, length, 3\)"):
        s4(jnp.ones((2, 5, 7)))
    with pytest.raises(ValueError, match=r"hidden has length 9 \(shape \(1, 9, 3\)\), expected at most l_max = 8"):
        s4(jnp.ones((1, 9, 3)))
    with pytest.raises(ValueError, match=r"hidden_t has shape \(2, 4\), expected \(batch, 3\)"):
        S4D(3, d_state=STATE, rngs=nnx.Rngs(0)).step(jnp.ones((2, 4)), LTICache(jnp.zeros((2, 3, 3), jnp.complex64)))
    with pytest.raises(ValueError, match="d_state is 5, expected an even integer"):
        S5(3, d_state=5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="blocks is 3"):
        S5(3, d_state=8, blocks=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="liquid_order is 1, expected an integer >= 2"):
        LiquidS4(3, l_max=8, liquid_order=1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="liquid_kernel is 'ab'"):
        LiquidS4(3, l_max=8, liquid_kernel="ab", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="init is 'legs'"):
        S4D(3, init="legs", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="output is 'swish'"):
        S5(3, output="swish", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="discretization is 'euler'"):
        S4D(3, discretization="euler", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dt_min=0.5, dt_max=0.1"):
        S4D(3, dt_min=0.5, rngs=nnx.Rngs(0))
