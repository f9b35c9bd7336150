"""Every backend of the selective scan against a float64 NumPy recurrence."""

import functools
import importlib
import warnings

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TOLERANCE, relative_error
from packing import packings, scan_segments_alone
from ssmjax.kernels import common as kernel_common
from ssmjax.ops import selective_scan, selective_scan_step
from ssmjax.ops.reference import selective_scan_reference as reference_scan
from ssmjax.ops.selective_scan import segment_starts

# The module, not the function that ssmjax.ops exports under the same name.
scan_module = importlib.import_module("ssmjax.ops.selective_scan")

XLA_BACKENDS = ("sequential", "associative", "chunked")
# "pallas" runs the fused kernel in interpret mode on the CPU.
ALL_BACKENDS = XLA_BACKENDS + ("pallas",)
CHUNK = 8  # small, so that the test lengths span several chunks and a partial one


def make_inputs(seed, batch=2, length=13, channels=6, state=4, groups=None, dtype=jnp.float32,
                with_D=True, with_z=True, with_bias=True, with_initial=True):
    """Fresh random inputs with the magnitudes of a Mamba layer (Δ around softplus⁻¹(0.01..0.1))."""
    rng = np.random.default_rng(seed)
    bc_shape = (batch, length, state) if groups is None else (batch, length, groups, state)
    inputs = dict(
        u=rng.standard_normal((batch, length, channels)),
        delta=rng.uniform(-4.0, 0.5, (batch, length, channels)),
        A=-np.exp(rng.uniform(-1.0, 2.0, (channels, state))),
        B=rng.standard_normal(bc_shape),
        C=rng.standard_normal(bc_shape),
        D=rng.standard_normal(channels) if with_D else None,
        z=rng.standard_normal((batch, length, channels)) if with_z else None,
        delta_bias=rng.uniform(-1.0, 1.0, channels) if with_bias else None,
        initial_state=rng.standard_normal((batch, channels, state)) if with_initial else None,
    )
    cast = {"u": dtype, "delta": dtype, "z": dtype, "B": dtype, "C": dtype}
    return {k: None if v is None else jnp.asarray(v, cast.get(k, jnp.float32))
            for k, v in inputs.items()}


def run(backend, inputs, delta_softplus=True, **options):
    return selective_scan(**inputs, delta_softplus=delta_softplus, return_final_state=True,
                          backend=backend, chunk_size=CHUNK, **options)


CASES = [
    # (length, state, groups, with_D, with_z, with_bias, with_initial)
    (1, 4, None, True, True, True, True),
    (13, 4, None, True, True, True, True),       # prime length
    (37, 1, None, False, False, False, False),   # n = 1, L not divisible by the chunk, bare
    (37, 4, 2, True, False, True, False),        # grouped B/C
    (16, 3, 3, False, True, False, True),        # one group per two channels, L = 2 chunks
    (20, 4, 1, True, True, False, True),         # explicit single group
]


@pytest.mark.parametrize("backend", XLA_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "L{}-n{}-g{}-D{:d}z{:d}b{:d}h{:d}".format(*c))
def test_matches_float64_recurrence_fp32(backend, case):
    length, state, groups, with_D, with_z, with_bias, with_initial = case
    inputs = make_inputs(seed=CASES.index(case), length=length, state=state, groups=groups,
                         with_D=with_D, with_z=with_z, with_bias=with_bias,
                         with_initial=with_initial)
    y, final_state = run(backend, inputs)
    y_ref, state_ref = reference_scan(**inputs, delta_softplus=True)
    assert y.dtype == jnp.float32 and final_state.dtype == jnp.float32
    assert y.shape == y_ref.shape and final_state.shape == state_ref.shape
    assert relative_error(y, y_ref) < TOLERANCE[jnp.float32]
    assert relative_error(final_state, state_ref) < TOLERANCE[jnp.float32]


@pytest.mark.parametrize("backend", XLA_BACKENDS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_inputs_accumulate_in_fp32(backend, dtype):
    inputs = make_inputs(seed=7, length=29, groups=2, dtype=dtype)
    y, final_state = run(backend, inputs)
    y_ref, state_ref = reference_scan(**inputs, delta_softplus=True)
    assert y.dtype == dtype and final_state.dtype == jnp.float32
    assert relative_error(y, y_ref) < TOLERANCE[dtype]
    assert relative_error(final_state, state_ref) < TOLERANCE[jnp.float32]


@pytest.mark.parametrize("backend", XLA_BACKENDS)
def test_without_softplus(backend):
    inputs = make_inputs(seed=11, length=10)
    inputs["delta"] = jnp.abs(inputs["delta"]) * 0.05
    y, final_state = run(backend, inputs, delta_softplus=False)
    y_ref, state_ref = reference_scan(**inputs, delta_softplus=False)
    assert relative_error(y, y_ref) < TOLERANCE[jnp.float32]
    assert relative_error(final_state, state_ref) < TOLERANCE[jnp.float32]


def _weighted_sum(outputs, weights):
    y, final_state = outputs
    return (y * weights[0]).sum() + (final_state * weights[1]).sum()


def _random_weights(inputs, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(inputs["u"].shape), rng.standard_normal(inputs["initial_state"].shape))


def float64_reference_gradients(inputs, weights):
    """Gradients of the test's own reference, by float64 autodiff through its loop."""
    with jax.enable_x64(True):
        inputs64 = {k: jnp.asarray(np.asarray(v, np.float64)) for k, v in inputs.items()}
        weights64 = tuple(jnp.asarray(w, jnp.float64) for w in weights)
        grads = jax.jit(jax.grad(lambda x: _weighted_sum(
            reference_scan(**x, delta_softplus=True, xp=jnp), weights64)))(inputs64)
        return {k: np.asarray(v) for k, v in grads.items()}


def backend_gradients(backend, inputs, weights, **options):
    weights = tuple(jnp.asarray(w, jnp.float32) for w in weights)
    return jax.jit(jax.grad(lambda x: _weighted_sum(run(backend, x, **options), weights)))(inputs)


@functools.cache
def gradient_case(groups):
    inputs = make_inputs(seed=3 + (groups or 0), length=12, groups=groups)
    weights = _random_weights(inputs, seed=5)
    return inputs, weights, float64_reference_gradients(inputs, weights)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("groups", [None, 2])
def test_gradients_match_float64_reference(backend, groups):
    inputs, weights, expected = gradient_case(groups)
    actual = backend_gradients(backend, inputs, weights)
    assert set(actual) == set(inputs)
    for name in inputs:
        assert actual[name].dtype == inputs[name].dtype, name
        assert relative_error(actual[name], expected[name]) < 1e-5, name


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gradients_through_the_final_state_alone(backend):
    """A loss on the final state only (a state carried to the next chunk of a long sequence)
    reaches every input."""
    inputs = make_inputs(seed=17, length=12, groups=2)
    weights = (np.zeros(inputs["u"].shape), _random_weights(inputs, seed=18)[1])
    expected = float64_reference_gradients(inputs, weights)
    actual = backend_gradients(backend, inputs, weights)
    for name in inputs:
        assert relative_error(actual[name], expected[name]) < 1e-5, name
    # The state depends on these (C, D and z only read it out, so their gradients are zero).
    for name in ("u", "delta", "A", "B", "delta_bias", "initial_state"):
        assert np.linalg.norm(expected[name]) > 0, name


@pytest.mark.parametrize("backend", ["associative", "chunked"])
def test_gradients_match_sequential_backend(backend):
    inputs = make_inputs(seed=13, length=19, groups=3)
    weights = _random_weights(inputs, seed=8)
    expected = backend_gradients("sequential", inputs, weights)
    actual = backend_gradients(backend, inputs, weights)
    for name in inputs:
        assert relative_error(actual[name], expected[name]) < 1e-5, name


@hypothesis.settings(max_examples=12, deadline=None, derandomize=True)
@hypothesis.given(length=st.integers(1, 40), chunk=st.integers(1, 16), state=st.integers(1, 5),
                  groups=st.sampled_from([1, 2, 3]))
def test_chunked_equals_reference_for_any_chunking(length, chunk, state, groups):
    inputs = make_inputs(seed=length * 1000 + chunk, length=length, state=state, groups=groups)
    y, final_state = selective_scan(**inputs, delta_softplus=True, return_final_state=True,
                                    backend="chunked", chunk_size=chunk)
    y_ref, state_ref = reference_scan(**inputs, delta_softplus=True)
    assert relative_error(y, y_ref) < TOLERANCE[jnp.float32]
    assert relative_error(final_state, state_ref) < TOLERANCE[jnp.float32]


@pytest.mark.parametrize("packed", [False, True])
def test_reference_loop_equals_its_lax_scan_form(packed):
    """The NumPy loop and the lax.scan form of the float64 reference are one recurrence."""
    inputs = make_inputs(seed=29, length=9, groups=3)
    segment_ids = np.array([[0, 0, 1, 1, 1, 2, 0, 0, 0], [5] * 9]) if packed else None
    y_loop, state_loop = reference_scan(**inputs, delta_softplus=True, segment_ids=segment_ids)
    with jax.enable_x64(True):
        y_scan, state_scan = jax.jit(lambda x: reference_scan(
            **x, delta_softplus=True, segment_ids=segment_ids, xp=jnp))(
            {k: jnp.asarray(np.asarray(v, np.float64)) for k, v in inputs.items()})
        assert y_scan.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(y_scan), y_loop, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(state_scan), state_loop, rtol=1e-12, atol=1e-12)


def test_final_state_continues_the_sequence():
    """Scanning two halves with the state handed over equals scanning the whole."""
    inputs = make_inputs(seed=23, length=18)
    whole, whole_state = run("chunked", inputs)
    first = {k: v[:, :7] if k in ("u", "delta", "B", "C", "z") else v for k, v in inputs.items()}
    second = {k: v[:, 7:] if k in ("u", "delta", "B", "C", "z") else v for k, v in inputs.items()}
    y1, state1 = run("chunked", first)
    y2, state2 = run("chunked", {**second, "initial_state": state1})
    assert relative_error(jnp.concatenate([y1, y2], axis=1), whole) < 1e-6
    assert relative_error(state2, whole_state) < 1e-6


@pytest.mark.parametrize("packed", [False, True])
def test_step_matches_reference(packed):
    inputs = make_inputs(seed=29, length=6, groups=2)
    segment_ids = np.array([[1, 1, 2, 3, 3, 3], [0, 4, 4, 4, 4, 0]]) if packed else None
    y_ref, state_ref = reference_scan(**inputs, delta_softplus=True, segment_ids=segment_ids)
    reset = None if segment_ids is None else segment_starts(segment_ids, 2, 6)
    state = inputs["initial_state"]
    for t in range(6):
        y_t, state = selective_scan_step(
            state, inputs["u"][:, t], inputs["delta"][:, t], inputs["A"], inputs["B"][:, t],
            inputs["C"][:, t], inputs["D"], inputs["z"][:, t], inputs["delta_bias"], True,
            reset=None if reset is None else reset[:, t])
        assert relative_error(y_t, y_ref[:, t]) < TOLERANCE[jnp.float32]
    assert relative_error(state, state_ref) < TOLERANCE[jnp.float32]


# ------------------------------------------------------------------- packed sequences

PACKED_LENGTH = 3 * CHUNK  # the aligned layout puts boundaries on the chunked scan's chunks


@functools.cache
def packed_case(layout):
    """Inputs of three packed rows, their segment ids, cotangents and the float64 values of
    every segment run alone (y, final state, gradients)."""
    segment_ids = packings(np.random.default_rng(47), PACKED_LENGTH)[layout]
    inputs = make_inputs(seed=48, batch=3, length=PACKED_LENGTH,
                         groups=2 if layout == "short-long-aligned" else None)
    weights = _random_weights(inputs, seed=49)
    return inputs, segment_ids, weights, scan_segments_alone(inputs, segment_ids, weights)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("layout", ["short-long-aligned", "unit-padded-single"])
def test_packed_rows_equal_their_segments_run_alone(backend, layout):
    """Output, final state and every gradient of a packed scan equal those of its segments
    scanned one by one (each from a zero state, the first from the row's initial state)."""
    inputs, segment_ids, weights, (y_alone, h_alone, grads_alone) = packed_case(layout)

    @jax.jit
    def outputs_and_gradients(x, cotangents):
        (y, h), vjp = jax.vjp(lambda x: run(backend, x, segment_ids=segment_ids), x)
        return y, h, vjp(cotangents)[0]

    y, h, grads = outputs_and_gradients(inputs, tuple(jnp.asarray(w, jnp.float32) for w in weights))
    assert relative_error(y, y_alone) < TOLERANCE[jnp.float32]
    assert relative_error(h, h_alone) < TOLERANCE[jnp.float32]
    for name in inputs:
        assert relative_error(grads[name], grads_alone[name]) < TOLERANCE[jnp.float32], name


def test_packed_reference_equals_its_segments_run_alone():
    inputs, segment_ids, weights, (y_alone, h_alone, _) = packed_case("short-long-aligned")
    y, h = reference_scan(**inputs, delta_softplus=True, segment_ids=segment_ids)
    np.testing.assert_allclose(y, y_alone, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h, h_alone, rtol=1e-10, atol=1e-12)


def test_one_segment_per_row_is_the_unpacked_scan():
    inputs = make_inputs(seed=53, length=11)
    packed = run("chunked", inputs, segment_ids=jnp.full((2, 11), 3))
    chex.assert_trees_all_close(packed, run("chunked", inputs), rtol=0, atol=0)


# ------------------------------------------------------------------- a jax without Triton


@pytest.fixture
def gpu_without_triton(monkeypatch):
    """A GPU platform whose jax has no Pallas Triton lowering; the once-per-process warning
    forgotten before and after."""
    monkeypatch.setattr(kernel_common, "triton_lowering", lambda: None)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    scan_module._warn_auto_without_triton.cache_clear()
    yield
    scan_module._warn_auto_without_triton.cache_clear()


def test_auto_without_triton_warns_once_and_scans_chunked(gpu_without_triton):
    inputs = make_inputs(seed=59, length=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = run("auto", inputs), run("auto", inputs)
    fallbacks = [w for w in caught if "chunked XLA scan" in str(w.message)]
    assert len(fallbacks) == 1 and fallbacks[0].category is RuntimeWarning
    assert "jax.experimental.pallas.triton" in str(fallbacks[0].message)
    chunked = run("chunked", inputs)
    chex.assert_trees_all_close((first, second), (chunked, chunked), rtol=0, atol=0)


def test_pallas_without_triton_is_a_clear_error(gpu_without_triton):
    with pytest.raises(RuntimeError, match=r"backend='pallas' needs Pallas' Triton lowering "
                                           r"\(jax\.experimental\.pallas\.triton.*backend='chunked'"):
        run("pallas", make_inputs(seed=61))


@pytest.mark.parametrize("backend", XLA_BACKENDS)
def test_jit_and_vmap(backend):
    inputs = make_inputs(seed=31, length=12)
    stacked = {k: jnp.stack([v, v * 0.5]) for k, v in inputs.items()}
    scan = jax.jit(jax.vmap(lambda x: run(backend, x)))
    y, final_state = scan(stacked)
    for i, scale in enumerate((1.0, 0.5)):
        y_ref, state_ref = reference_scan(**{k: v * scale for k, v in inputs.items()},
                                          delta_softplus=True)
        assert relative_error(y[i], y_ref) < TOLERANCE[jnp.float32]
        assert relative_error(final_state[i], state_ref) < TOLERANCE[jnp.float32]


BAD_INPUTS = [
    ("B", lambda x: x["B"][:, :-1], r"B has shape \(2, 12, 4\), expected \(2, 13, 4\)"),
    ("A", lambda x: x["A"][:-1], r"A has shape \(5, 4\), expected \(6, state_size\)"),
    ("B", lambda x: jnp.ones((2, 13, 4, 4)), r"B has 4 groups .* must divide the 6 channels"),
    ("C", lambda x: jnp.ones((2, 13, 2, 4)), r"B has shape \(2, 13, 1, 4\) but C has shape \(2, 13, 2, 4\)"),
    ("delta", lambda x: x["delta"][:, :, :3], r"delta has shape \(2, 13, 3\), expected \(2, 13, 6\)"),
    ("z", lambda x: x["z"][0], r"z has shape \(13, 6\), expected \(2, 13, 6\)"),
    ("D", lambda x: jnp.ones(5), r"D has shape \(5,\), expected \(6,\)"),
    ("delta_bias", lambda x: jnp.ones((6, 1)), r"delta_bias has shape \(6, 1\), expected \(6,\)"),
    ("initial_state", lambda x: jnp.ones((2, 6, 5)), r"initial_state has shape \(2, 6, 5\), expected \(2, 6, 4\)"),
    ("u", lambda x: x["u"].astype(jnp.int32), r"u has dtype int32, expected a floating dtype"),
    ("u", lambda x: x["u"][0], r"u has shape \(13, 6\), expected \(batch, length, channels\)"),
]


@pytest.mark.parametrize("name,corrupt,message", BAD_INPUTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_inputs_raise_value_error_naming_the_argument(name, corrupt, message):
    inputs = make_inputs(seed=37)
    inputs[name] = corrupt(inputs)
    with pytest.raises(ValueError, match=message):
        selective_scan(**inputs)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend is 'fast'"):
        selective_scan(**make_inputs(seed=41), backend="fast")


@pytest.mark.parametrize("segment_ids,message", [
    (np.zeros((2, 12), np.int32), r"segment_ids has shape \(2, 12\), expected \(2, 13\)"),
    (np.zeros((2, 13), np.float32), r"segment_ids has dtype float32, expected an integer dtype"),
])
def test_bad_segment_ids_raise_value_error(segment_ids, message):
    with pytest.raises(ValueError, match=message):
        selective_scan(**make_inputs(seed=67), segment_ids=segment_ids)


def test_batch_axes_must_name_axes_of_the_mesh():
    inputs = make_inputs(seed=71)
    with pytest.raises(ValueError, match=r"batch_axes is 'data', expected a tuple of mesh axis names"):
        selective_scan(**inputs, batch_axes="data")
    mesh = jax.make_mesh((1,), ("data",))
    with jax.set_mesh(mesh), pytest.raises(ValueError, match=r"mesh \('data',\): it has no axis 'fsdp'"):
        selective_scan(**inputs, backend="pallas", batch_axes=("data", "fsdp"))
