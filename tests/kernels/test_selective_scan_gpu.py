"""The fused selective-scan kernels in Pallas interpret mode (CPU) against float64 references.

The forward reference is :func:`ssmjax.ops.reference.selective_scan_reference`'s NumPy loop
over time; gradients are checked against its ``lax.scan`` form differentiated in float64
under ``jax.enable_x64``. Every check
draws fresh inputs from a fixed seed. Shapes are tiny because interpret mode is slow; the
GPU lowering is checked by ``experiments/gpu_check_selective_scan.py``.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TOLERANCE, relative_error
from ssmjax.kernels import common
from ssmjax.kernels.selective_scan_gpu import selective_scan
from ssmjax.ops.reference import selective_scan_reference

# Small blocks, 2-step iterations and 2-step checkpoint chunks keep interpret-mode compiles
# quick while exercising the loop, the prefetch queue, the masked tail and several chunks.
FAST = dict(block_d=4, bwd_block_d=4, unroll=2, prefetch=2, chunk=2, interpret=True)
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
STATIC = ("reset",)  # kernel inputs without a gradient


def make_inputs(seed, *, batch=2, length=7, d=8, n=4, groups=1, dtype=jnp.float32,
                with_d=True, with_z=True, with_bias=True, with_state=True, softplus=True):
    rng = np.random.default_rng(seed)
    args = dict(
        u=rng.standard_normal((batch, length, d)),
        # Pre-softplus values span Mamba's dt range; without softplus, delta is a step size.
        delta=(rng.uniform(-4.0, 0.5, (batch, length, d)) if softplus
               else rng.uniform(0.001, 0.3, (batch, length, d))),
        A=-np.exp(rng.uniform(-1.0, 1.5, (d, n))),
        B=rng.standard_normal((batch, length, groups, n)),
        C=rng.standard_normal((batch, length, groups, n)),
        D=rng.standard_normal(d) if with_d else None,
        z=rng.standard_normal((batch, length, d)) if with_z else None,
        delta_bias=rng.uniform(-0.5, 0.5, d) if with_bias else None,
        initial_state=rng.standard_normal((batch, d, n)) if with_state else None,
    )
    # Activations in the test dtype; parameters and the state in float32, as in a Mamba layer.
    low = ("u", "delta", "B", "C", "z")
    return {k: None if v is None else jnp.asarray(v, dtype if k in low else jnp.float32)
            for k, v in args.items()}


def outputs_and_gradients(fn, args, cotangents, static=None):
    """y, final state and the vjp for every present input, as one compiled program.

    ``static``: keyword arguments passed as they are (no gradient), e.g. ``reset``.
    """
    present = [k for k in NAMES if args[k] is not None]
    absent = {k: None for k in NAMES if args[k] is None}
    static = static or {}

    def run(xs, cotangents, static):
        outputs, vjp = jax.vjp(lambda *xs: fn(**dict(zip(present, xs)), **absent, **static), *xs)
        return outputs, dict(zip(present, vjp(cotangents)))

    return jax.jit(run)([args[k] for k in present], cotangents, static)


def check(args, softplus, *, seed, test_inference_path=False, reset=None,
          final_state_only=False, **options):
    """Kernel vs the float64 references: y, final state and every gradient.

    ``reset``: ``(b, l)`` bool, where segments start; ``final_state_only``: the cotangent of y
    is zero, so every gradient flows from the final state's.
    """
    tol = TOLERANCE[args["u"].dtype.type]
    rng = np.random.default_rng(seed + 1000)
    dy = 0.0 * args["u"] if final_state_only else rng.standard_normal(args["u"].shape)
    dh = rng.standard_normal(args["initial_state"].shape if args["initial_state"] is not None
                             else (args["u"].shape[0],) + args["A"].shape)
    kernel = functools.partial(selective_scan, delta_softplus=softplus, **FAST, **options)
    static = {} if reset is None else {"reset": jnp.asarray(reset)}
    (y, h), grads = outputs_and_gradients(
        kernel, args, (jnp.asarray(dy, args["u"].dtype), jnp.asarray(dh, jnp.float32)), static)

    y_ref, h_ref = selective_scan_reference(**args, delta_softplus=softplus, reset=reset)
    assert y.dtype == args["u"].dtype and y.shape == args["u"].shape
    assert h.dtype == jnp.float32 and h.shape == h_ref.shape
    assert relative_error(y, y_ref) < tol, relative_error(y, y_ref)
    assert relative_error(h, h_ref) < tol, relative_error(h, h_ref)
    if test_inference_path:  # the forward without checkpoints (no vjp around it)
        y_inf, h_inf = jax.jit(kernel)(**args, **static)
        assert relative_error(y_inf, y_ref) < tol and relative_error(h_inf, h_ref) < tol

    with jax.enable_x64(True):
        args64 = {k: None if v is None else jnp.asarray(np.asarray(v, np.float64))
                  for k, v in args.items()}
        _, ref_grads = outputs_and_gradients(
            functools.partial(selective_scan_reference, delta_softplus=softplus, xp=jnp), args64,
            (jnp.asarray(np.asarray(dy, np.float64)), jnp.asarray(dh)), static)
        ref_grads = {k: np.asarray(v) for k, v in ref_grads.items()}
    for name, g in grads.items():
        assert g.dtype == args[name].dtype and g.shape == args[name].shape, (name, g.dtype)
        err = relative_error(g, ref_grads[name])
        assert err < tol, f"d{name}: relative error {err:.2e} (tolerance {tol:.0e})"


@pytest.mark.parametrize("length", [1, 7, 37])
def test_fp32_odd_lengths_grouped(length):
    args = make_inputs(length, length=length, d=8, groups=2)
    check(args, True, seed=length, test_inference_path=length == 7)


@pytest.mark.parametrize(
    "options",
    [
        dict(with_d=False, with_z=False, with_bias=False, with_state=False, softplus=False),
        dict(with_d=False, with_z=True, with_bias=False, with_state=True, softplus=False),
        dict(with_d=True, with_z=False, with_bias=True, with_state=False, softplus=True),
    ],
    ids=["bare", "z+state", "D+bias+softplus"],
)
def test_fp32_optional_inputs(options):
    args = make_inputs(3, length=9, d=8, groups=1, **options)
    check(args, options["softplus"], seed=3)


def test_non_power_of_two_state_and_narrow_groups():
    # n = 3 is padded to 4 inside; d // g = 6 channels per group forces 2-channel blocks.
    args = make_inputs(5, length=6, d=12, n=3, groups=2)
    check(args, True, seed=5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs(dtype):
    args = make_inputs(7, length=37, d=8, groups=2, dtype=dtype)
    check(args, True, seed=7)


def test_jit_and_vmap():
    args = make_inputs(11, batch=2, length=5, d=8, groups=1)
    mapped = ("u", "delta", "B", "C", "z", "initial_state")
    stacked = {k: jnp.stack([args[k], args[k][::-1] * 0.5]) for k in mapped}

    def run(u, delta, B, C, z, initial_state):
        return selective_scan(u, delta, args["A"], B, C, args["D"], z, args["delta_bias"],
                              initial_state, delta_softplus=True, **FAST)

    y, h = jax.jit(jax.vmap(run))(*[stacked[k] for k in mapped])
    for i in range(2):
        y_ref, h_ref = selective_scan_reference(
            **dict(args, **{k: stacked[k][i] for k in mapped}), delta_softplus=True)
        assert relative_error(y[i], y_ref) < 1e-5 and relative_error(h[i], h_ref) < 1e-5

    # Gradients through jit(vmap(...)) equal the per-example gradients.
    loss = lambda *xs: jnp.sum(run(*xs)[0] ** 2)  # noqa: E731
    g_batched = jax.jit(jax.vmap(jax.grad(loss)))(*[stacked[k] for k in mapped])
    g_first = jax.jit(jax.grad(loss))(*[stacked[k][0] for k in mapped])
    assert relative_error(g_batched[0], g_first) < 1e-6


def random_resets(rng, batch, length, rate=0.3):
    """``(b, l)`` bool segment starts: random, plus the first step of row 0 (which drops the
    initial state) and the last step of the last row (the masked steps after it must not
    reset the final state)."""
    reset = rng.random((batch, length)) < rate
    reset[0, 0] = True
    reset[-1, -1] = True
    return reset


@pytest.mark.parametrize("length,groups,dtype", [(37, 2, jnp.float32), (8, 1, jnp.float32),
                                                 (37, 2, jnp.bfloat16)])
def test_resets(length, groups, dtype):
    """Segment starts anywhere, chunk boundaries and both ends included (L = 8 fills the
    iterations; L = 37 masks the last one)."""
    args = make_inputs(13, length=length, d=8, groups=groups, dtype=dtype)
    reset = random_resets(np.random.default_rng(14), 2, length)
    reset[1, 2] = reset[1, 4] = True  # the first steps of checkpoint chunks (chunk = 2)
    check(args, True, seed=13, reset=reset, test_inference_path=length == 37)


def test_resets_without_initial_state_or_softplus():
    args = make_inputs(15, length=9, d=8, with_state=False, softplus=False)
    check(args, False, seed=15, reset=random_resets(np.random.default_rng(16), 2, 9))


@pytest.mark.parametrize("with_reset", [False, True])
def test_final_state_cotangent_alone(with_reset):
    """dy = 0: every gradient comes from the final state's cotangent."""
    args = make_inputs(17, length=11, d=8, groups=2)
    reset = random_resets(np.random.default_rng(18), 2, 11) if with_reset else None
    if reset is not None:
        reset[:, 0] = False  # keep the initial state, so that its gradient is not zero
    check(args, True, seed=17, reset=reset, final_state_only=True)


def test_reset_of_wrong_shape_is_rejected():
    args = make_inputs(19, length=5)
    with pytest.raises(ValueError, match=r"reset has shape \(2, 4\), expected \(2, 5\)"):
        selective_scan(**args, reset=jnp.zeros((2, 4), bool), **FAST)


def test_a_jax_without_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(common, "triton_lowering", lambda: None)
    with pytest.raises(RuntimeError, match=r"ssmjax.kernels.selective_scan needs Pallas' Triton "
                                           r"lowering \(jax\.experimental\.pallas\.triton"):
        selective_scan(**make_inputs(21, length=5), **FAST)


def test_triton_deprecation_is_shown_once():
    """jax 0.11 warns at every lowering through Triton (each kernel of each compile)."""
    message = common.TRITON_DEPRECATION_MESSAGE + " (as a test raises it)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        common.show_triton_deprecation_once()
        for _ in range(3):
            warnings.warn(message, DeprecationWarning)
    assert [str(w.message) for w in caught] == [message]


def test_interpret_by_default_off_the_kernels_platform():
    assert common.interpret_by_default(None) is (jax.default_backend() != "gpu")
    assert common.interpret_by_default(None, platform=jax.default_backend()) is False
    assert common.interpret_by_default(False) is False
