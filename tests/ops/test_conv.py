"""Causal depthwise conv1d and its step form against a float64 loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TOLERANCE, relative_error
from packing import packings, segment_spans
from ssmjax.ops import causal_conv1d, causal_conv1d_step
from ssmjax.ops.selective_scan import segment_starts


def reference_conv(x, weight, bias, silu, initial_state=None, xp=np):
    """PyTorch Conv1d(groups=d, padding=k-1)[..., :L] semantics, written out, float64.

    ``xp``: ``numpy``, or ``jax.numpy`` under ``jax.enable_x64`` (for reference gradients).
    """
    x, weight = xp.asarray(x, xp.float64), xp.asarray(weight, xp.float64)
    batch, length, channels = x.shape
    width = weight.shape[1]
    history = (xp.zeros((batch, width - 1, channels)) if initial_state is None
               else xp.asarray(initial_state, xp.float64))
    padded = xp.concatenate([history, x], axis=1)
    # y[t] = Σ_j weight[j] · padded[t + j], for all t at once.
    y = sum(weight[:, j] * padded[:, j:j + length] for j in range(width))
    if bias is not None:
        y = y + xp.asarray(bias, xp.float64)
    return y / (1.0 + xp.exp(-y)) if silu else y


def inputs(seed, length=11, channels=5, width=4, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal((2, length, channels)), dtype),
            jnp.asarray(rng.standard_normal((channels, width)), jnp.float32),
            jnp.asarray(rng.standard_normal(channels), jnp.float32),
            jnp.asarray(rng.standard_normal((2, width - 1, channels)), dtype))


@pytest.mark.parametrize("length,width", [(1, 4), (11, 4), (3, 4), (9, 2), (7, 1)])
@pytest.mark.parametrize("silu", [False, True])
def test_matches_reference(length, width, silu):
    x, weight, bias, history = inputs(length * 10 + width, length=length, width=width)
    activation = "silu" if silu else None
    y = causal_conv1d(x, weight, bias, activation)
    assert relative_error(y, reference_conv(x, weight, bias, silu)) < TOLERANCE[jnp.float32]
    y, final = causal_conv1d(x, weight, None, activation, initial_state=history,
                             return_final_state=True)
    assert relative_error(y, reference_conv(x, weight, None, silu, history)) < TOLERANCE[jnp.float32]
    full = np.concatenate([np.asarray(history), np.asarray(x)], axis=1)
    np.testing.assert_array_equal(final, full[:, full.shape[1] - (width - 1):])


def test_bfloat16_accumulates_in_fp32():
    x, weight, bias, _ = inputs(3, length=64, dtype=jnp.bfloat16)
    y = causal_conv1d(x, weight, bias, "silu")
    assert y.dtype == jnp.bfloat16
    assert relative_error(y, reference_conv(x, weight, bias, True)) < TOLERANCE[jnp.bfloat16]


def test_steps_equal_the_sequence():
    x, weight, bias, history = inputs(5, length=9)
    expected = causal_conv1d(x, weight, bias, "silu", initial_state=history)
    state = history
    for t in range(9):
        y_t, state = causal_conv1d_step(state, x[:, t], weight, bias, "silu")
        assert relative_error(y_t, expected[:, t]) < 1e-6
    np.testing.assert_array_equal(state, x[:, -3:])


def test_bad_shapes_raise():
    x, weight, bias, history = inputs(7)
    with pytest.raises(ValueError, match=r"weight has shape \(4, 4\), expected \(5, kernel_width\)"):
        causal_conv1d(x, weight[:4])
    with pytest.raises(ValueError, match=r"bias has shape \(4,\), expected \(5,\)"):
        causal_conv1d(x, weight, bias[:4])
    with pytest.raises(ValueError, match=r"initial_state has shape \(2, 2, 5\), expected \(2, 3, 5\)"):
        causal_conv1d(x, weight, initial_state=history[:, 1:])
    with pytest.raises(ValueError, match="activation is 'relu'"):
        causal_conv1d(x, weight, activation="relu")


# ------------------------------------------------------------------- packed sequences

PACKED_LENGTH = 12


def conv_segments_alone(x, weight, bias, initial_state, segment_ids, xp=np):
    """Each segment convolved alone (zero history, the row's initial state before its first
    segment), float64: ``y`` in the packed layout and each row's final state, the last
    segment's last k − 1 inputs behind its history."""
    width = weight.shape[1]
    y = [[] for _ in range(x.shape[0])]
    final = [None] * x.shape[0]
    for row, start, end in segment_spans(segment_ids):
        history = (initial_state[row:row + 1] if start == 0
                   else xp.zeros((1, width - 1, x.shape[2])))
        segment = x[row:row + 1, start:end]
        y[row].append(reference_conv(segment, weight, bias, True, history, xp=xp))
        inputs = xp.concatenate([xp.asarray(history, xp.float64), xp.asarray(segment, xp.float64)],
                                axis=1)
        final[row] = inputs[:, inputs.shape[1] - (width - 1):]
    return (xp.concatenate([xp.concatenate(parts, axis=1) for parts in y], axis=0),
            xp.concatenate(final, axis=0))


@functools.cache
def packed_conv_case(layout, width):
    segment_ids = packings(np.random.default_rng(81), PACKED_LENGTH)[layout]
    x, weight, bias, history = inputs(82 + width, length=PACKED_LENGTH, width=width)
    x, history = (jnp.concatenate([v, v[:1] * 0.5]) for v in (x, history))  # three rows
    rng = np.random.default_rng(83)
    w_y, w_state = rng.standard_normal(x.shape), rng.standard_normal(history.shape)
    args = dict(x=x, weight=weight, bias=bias, initial_state=history)
    with jax.enable_x64(True):
        def loss(a):
            y, final = conv_segments_alone(**a, segment_ids=segment_ids, xp=jnp)
            return jnp.sum(y * w_y) + jnp.sum(final * w_state), (y, final)

        grads, (y, final) = jax.jit(jax.grad(loss, has_aux=True))(
            {k: jnp.asarray(np.asarray(v, np.float64)) for k, v in args.items()})
        expected = (np.asarray(y), np.asarray(final), {k: np.asarray(v) for k, v in grads.items()})
    return args, segment_ids, (w_y, w_state), expected


LAYOUTS = ["short-long-aligned", "unit-padded-single"]


@pytest.mark.parametrize("width", [4, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_packed_conv_equals_segments_alone(layout, width):
    """No window crosses a boundary: output, final state and every gradient equal those of
    the segments convolved one by one."""
    args, segment_ids, (w_y, w_state), (y_alone, final_alone, grads_alone) = packed_conv_case(
        layout, width)

    @jax.jit
    def outputs_and_gradients(a):
        def run(a):
            return causal_conv1d(**a, activation="silu", return_final_state=True,
                                 segment_ids=segment_ids)
        (y, final), vjp = jax.vjp(run, a)
        return y, final, vjp((jnp.asarray(w_y, jnp.float32), jnp.asarray(w_state, jnp.float32)))[0]

    y, final, grads = outputs_and_gradients(args)
    assert relative_error(y, y_alone) < TOLERANCE[jnp.float32]
    np.testing.assert_array_equal(final, final_alone.astype(np.float32))
    for name in args:
        assert relative_error(grads[name], grads_alone[name]) < TOLERANCE[jnp.float32], name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_steps_with_resets_equal_segments_alone(layout):
    """Stepping with ``reset`` at every segment start gives the packed convolution, and its
    gradients."""
    args, segment_ids, (w_y, w_state), (y_alone, final_alone, grads_alone) = packed_conv_case(
        layout, 4)
    reset = segment_starts(segment_ids, *segment_ids.shape)

    @jax.jit
    def outputs_and_gradients(a):
        def run(a):
            state, ys = a["initial_state"], []
            for t in range(PACKED_LENGTH):
                y_t, state = causal_conv1d_step(state, a["x"][:, t], a["weight"], a["bias"],
                                                "silu", reset=reset[:, t])
                ys.append(y_t)
            return jnp.stack(ys, axis=1), state
        (y, final), vjp = jax.vjp(run, a)
        return y, final, vjp((jnp.asarray(w_y, jnp.float32), jnp.asarray(w_state, jnp.float32)))[0]

    y, final, grads = outputs_and_gradients(args)
    assert relative_error(y, y_alone) < TOLERANCE[jnp.float32]
    np.testing.assert_array_equal(final, final_alone.astype(np.float32))
    for name in args:
        assert relative_error(grads[name], grads_alone[name]) < TOLERANCE[jnp.float32], name


def test_final_state_of_a_short_last_segment_is_zero_padded():
    x, weight, _, history = inputs(85, length=6)
    segment_ids = jnp.asarray([[1, 1, 1, 1, 2, 2], [1, 1, 1, 1, 1, 1]])
    _, final = causal_conv1d(x, weight, initial_state=history, return_final_state=True,
                             segment_ids=segment_ids)
    np.testing.assert_array_equal(final[0], jnp.concatenate([jnp.zeros((1, 5)), x[0, 4:]]))
    np.testing.assert_array_equal(final[1], x[1, 3:])


def test_bad_segment_inputs_raise():
    x, weight, bias, history = inputs(87)
    with pytest.raises(ValueError, match=r"segment_ids has shape \(2, 10\), expected \(2, 11\)"):
        causal_conv1d(x, weight, segment_ids=jnp.zeros((2, 10), jnp.int32))
    with pytest.raises(ValueError, match=r"reset has shape \(3,\), expected \(2,\)"):
        causal_conv1d_step(history, x[:, 0], weight, reset=jnp.zeros(3, bool))
    with pytest.raises(ValueError, match=r"state has shape \(2, 2, 5\), expected \(2, 3, 5\)"):
        causal_conv1d_step(history[:, 1:], x[:, 0], weight)
