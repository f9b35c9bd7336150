"""Causal depthwise 1-D convolution, the short convolution in front of Mamba's scan.

For channel c and kernel width k, with the input left-padded by the k − 1 previous inputs
(the conv state, zeros at the start of a sequence)::

    y[t, c] = bias[c] + Σ_{j<k} weight[c, j] · x[t − k + 1 + j, c]

which is PyTorch's ``Conv1d(groups=channels, padding=k − 1)`` truncated to the first L
outputs, as in mamba-ssm. Layout ``(batch, length, channels)``.

Packed sequences (``segment_ids``, the convention of :mod:`ssmjax.ops.selective_scan`): no
window crosses a segment boundary. A tap reads ``x[t − m]`` only if that position lies in t's
segment (as if each segment were left-padded with zeros), and the conv state before ``x`` feeds
only the first segment.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from ssmjax.ops.checks import shape_error
from ssmjax.ops.selective_scan import check_reset, segment_starts

Activation = Literal["silu"] | None


def _activate(y: jax.Array, activation: Activation) -> jax.Array:
    if activation is None:
        return y
    if activation == "silu":
        return jax.nn.silu(y)
    raise ValueError(f"activation is {activation!r}, expected None or 'silu'")


def _check_weight(x: jax.Array, weight: jax.Array, bias: jax.Array | None) -> None:
    channels = x.shape[-1]
    if weight.ndim != 2 or weight.shape[0] != channels:
        raise shape_error("weight", weight.shape, f"({channels}, kernel_width)")
    if bias is not None and bias.shape != (channels,):
        raise shape_error("bias", bias.shape, f"({channels},)")


def _steps_back_in_segment(segment_ids: jax.Array, batch: int, length: int,
                           width: int) -> jax.Array:
    """``(b, l)`` int: how many positions before t lie in t's segment, capped at k − 1. In the
    first segment all k − 1 do, the initial conv state included."""
    positions = jnp.arange(length)
    starts = jax.lax.cummax(jnp.where(segment_starts(segment_ids, batch, length), positions, 0),
                            axis=1)
    return jnp.where(starts == 0, width - 1, jnp.minimum(positions - starts, width - 1))


def causal_conv1d(x: jax.Array, weight: jax.Array, bias: jax.Array | None = None,
                  activation: Activation = None, initial_state: jax.Array | None = None,
                  return_final_state: bool = False, *, segment_ids: jax.Array | None = None):
    """Causal depthwise convolution over the length axis.

    Args:
        x: ``(b, l, d)``.
        weight: ``(d, k)``.
        bias: ``(d,)``.
        activation: ``None`` or ``"silu"``.
        initial_state: ``(b, k - 1, d)``, the k − 1 inputs before ``x`` (zeros if omitted);
            with ``segment_ids``, before each row's first segment only.
        return_final_state: also return the last k − 1 inputs, the state for
            :func:`causal_conv1d_step`; with ``segment_ids``, the last segment's (zeros where
            that segment, with the initial state if it is the first, is shorter).
        segment_ids: ``(b, l)`` int, documents packed into each row: no window crosses a
            change of id (the convention of :mod:`ssmjax.ops.selective_scan`).

    Returns:
        ``y: (b, l, d)`` in ``x.dtype`` (accumulated in float32) and, if asked, the final
        state ``(b, k - 1, d)`` in ``x.dtype``.
    """
    if x.ndim != 3:
        raise shape_error("x", x.shape, "(batch, length, channels)")
    _check_weight(x, weight, bias)
    batch, length, channels = x.shape
    width = weight.shape[1]
    if initial_state is None:
        initial_state = jnp.zeros((batch, width - 1, channels), x.dtype)
    elif initial_state.shape != (batch, width - 1, channels):
        raise shape_error("initial_state", initial_state.shape,
                          f"({batch}, {width - 1}, {channels})")
    padded = jnp.concatenate([initial_state.astype(x.dtype), x], axis=1)
    reach = (None if segment_ids is None
             else _steps_back_in_segment(segment_ids, batch, length, width))

    def tap(j):
        """``x[t − (k − 1 − j)]`` for every t, zero where it lies before t's segment."""
        shifted = padded[:, j:j + length]
        if reach is None:
            return shifted
        return jnp.where((reach >= width - 1 - j)[..., None], shifted, 0)

    # k is small (4 in Mamba): k shifted multiply-adds beat a general convolution everywhere.
    y = sum(tap(j).astype(jnp.float32) * weight[:, j].astype(jnp.float32) for j in range(width))
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    y = _activate(y, activation).astype(x.dtype)
    if not return_final_state:
        return y
    final_state = padded[:, padded.shape[1] - (width - 1):]
    if reach is not None:
        # Entry i is the input k − 1 − i steps before the next one, which continues the last
        # segment: kept if the last position reaches k − 2 − i steps back.
        entries = jnp.arange(width - 1)
        keep = entries[None, :] >= (width - 2 - reach[:, -1])[:, None]
        final_state = jnp.where(keep[..., None], final_state, 0)
    return y, final_state


def causal_conv1d_step(state: jax.Array, x_t: jax.Array, weight: jax.Array,
                       bias: jax.Array | None = None, activation: Activation = None, *,
                       reset: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """One step of :func:`causal_conv1d` with a rolling state.

    Args:
        state: ``(b, k - 1, d)``, the previous k − 1 inputs, oldest first.
        x_t: ``(b, d)``.
        weight: ``(d, k)``; bias: ``(d,)``.
        reset: ``(b,)`` bool, True where a new segment starts at this step: the previous
            inputs are forgotten (read as zeros).

    Returns:
        ``(y_t (b, d), state (b, k - 1, d))``.
    """
    if x_t.ndim != 2:
        raise shape_error("x_t", x_t.shape, "(batch, channels)")
    _check_weight(x_t, weight, bias)
    if state.shape != (x_t.shape[0], weight.shape[1] - 1, x_t.shape[1]):
        raise shape_error("state", state.shape,
                          f"({x_t.shape[0]}, {weight.shape[1] - 1}, {x_t.shape[1]})")
    if reset is not None:
        state = jnp.where(check_reset(reset, x_t.shape[0])[:, None, None], 0, state)
    window = jnp.concatenate([state.astype(x_t.dtype), x_t[:, None, :]], axis=1)
    y_t = jnp.einsum("bkd,dk->bd", window.astype(jnp.float32), weight.astype(jnp.float32))
    if bias is not None:
        y_t = y_t + bias.astype(jnp.float32)
    return _activate(y_t, activation).astype(x_t.dtype), window[:, 1:]
