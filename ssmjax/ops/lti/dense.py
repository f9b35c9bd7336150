"""A discretised SSM with a dense real state matrix (S4's recurrent view): power series,
state response, final state and one step."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ssmjax.ops.checks import shape_error
from ssmjax.ops.lti.common import _check_length, _check_lengths, right_align


class DenseRecurrence(NamedTuple):
    """A discretised SSM with a dense real state matrix: ``x_k = Ā x_{k−1} + Σ_m B̄_m u_{m,k}``,
    ``y_k = C̄ x_k``. ``A_bar: (h, N, N)``, ``B_bar: (m, h, N)``, ``C_bar: (c, h, N)``, real."""

    A_bar: jax.Array
    B_bar: jax.Array
    C_bar: jax.Array


def _check_dense(A_bar: jax.Array, name: str = "A_bar") -> tuple[int, int]:
    if A_bar.ndim != 3 or A_bar.shape[1] != A_bar.shape[2]:
        raise shape_error(name, A_bar.shape, "(channels, N, N)")
    return A_bar.shape[0], A_bar.shape[1]


def _check_dense_vectors(name: str, x: jax.Array, channels: int, size: int,
                         leading: str | None = None) -> None:
    """``x: (channels, size)``, or ``(leading, channels, size)`` when ``leading`` names an axis."""
    if x.shape[-2:] != (channels, size) or x.ndim != (2 if leading is None else 3):
        prefix = "" if leading is None else f"{leading}, "
        raise shape_error(name, x.shape, f"({prefix}{channels}, {size})")


def dense_power_series(A: jax.Array, v: jax.Array, length: int) -> jax.Array:
    """``[v, A v, A² v, …, A^{L−1} v]`` by doubling (⌈log₂ L⌉ matrix products).

    Args:
        A: ``(h, N, N)``.
        v: ``(..., h, N)``.
        length: L.

    Returns:
        ``(..., h, N, L)``.
    """
    _check_length(length)
    channels, size = _check_dense(A, "A")
    if v.shape[-2:] != (channels, size):
        raise shape_error("v", v.shape, f"(..., {channels}, {size})")
    series, power = v[..., None], A
    while series.shape[-1] < length:
        series = jnp.concatenate([series, jnp.einsum("hij,...hjl->...hil", power, series)], -1)
        power = power @ power
    return series[..., :length]


def dense_state_response(A_bar: jax.Array, C_bar: jax.Array, state: jax.Array,
                         length: int) -> jax.Array:
    """Output caused by an initial state alone, ``y_k = C̄ Ā^{k+1} x_{−1}``.

    Args:
        A_bar: ``(h, N, N)``; C_bar: ``(h, N)``; state: ``(b, h, N)``; length: L.

    Returns:
        ``(b, L, h)``.
    """
    channels, size = _check_dense(A_bar)
    _check_dense_vectors("C_bar", C_bar, channels, size)
    _check_dense_vectors("state", state, channels, size, "batch")
    first_row = jnp.einsum("hji,hj->hi", A_bar, C_bar)                                 # Āᵀ C̄ᵀ
    rows = dense_power_series(jnp.swapaxes(A_bar, -1, -2), first_row, length)          # (Āᵀ)^{k+1} C̄ᵀ
    return jnp.einsum("hnl,bhn->blh", rows, state)


def dense_final_state(A_bar: jax.Array, B_bar: jax.Array, inputs: jax.Array,
                      state: jax.Array | None = None,
                      lengths: jax.Array | None = None) -> jax.Array:
    """State after a sequence, ``x_{L−1} = Ā^L x_{−1} + Σ_m Σ_j Ā^{L−1−j} B̄_m u_{m,j}``.

    Args:
        A_bar: ``(h, N, N)``; B_bar: ``(m, h, N)``.
        inputs: ``(m, b, L, h)``, the sequence fed through each B̄_m.
        state: ``(b, h, N)`` (zero if omitted).
        lengths: ``(b,)``, the state after each row's first ``lengths[i]`` inputs instead
            (the rest ignored): L becomes ``lengths[i]`` in the sum above.

    Returns:
        ``(b, h, N)``.
    """
    channels, size = _check_dense(A_bar)
    _check_dense_vectors("B_bar", B_bar, channels, size, "m")
    if inputs.ndim != 4 or inputs.shape[0] != B_bar.shape[0] or inputs.shape[3] != channels:
        raise shape_error("inputs", inputs.shape, f"({B_bar.shape[0]}, batch, length, {channels})")
    if state is not None:
        _check_dense_vectors("state", state, channels, size, "batch")
    _check_lengths(lengths, inputs.shape[1])
    length = inputs.shape[2]
    if lengths is not None:
        inputs = right_align(inputs, lengths)
    columns = dense_power_series(A_bar, B_bar, length)[..., ::-1]                       # (m, h, N, L)
    final = jnp.einsum("mblh,mhnl->bhn", inputs.astype(A_bar.dtype), columns)
    if state is None:
        return final
    if lengths is None:
        return final + jnp.einsum("hij,bhj->bhi", jnp.linalg.matrix_power(A_bar, length), state)
    return final + dense_power_apply(A_bar, state, lengths, length)


def dense_power_apply(A: jax.Array, state: jax.Array, steps: jax.Array, max_steps: int) -> jax.Array:
    """``A^{steps[i]} x_i`` for each row i by binary powers (⌈log₂(max_steps + 1)⌉ squarings).

    Args:
        A: ``(h, N, N)``; state: ``(b, h, N)``; steps: ``(b,)`` int in ``[0, max_steps]``.

    Returns:
        ``(b, h, N)``.
    """
    power = A
    for bit in range(max(int(max_steps).bit_length(), 1)):
        use = ((steps >> bit) & 1).astype(bool)[:, None, None]
        state = jnp.where(use, jnp.einsum("hij,bhj->bhi", power, state), state)
        power = power @ power
    return state


def dense_step(recurrence: DenseRecurrence, state: jax.Array,
               inputs_t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step ``x_k = Ā x_{k−1} + Σ_m B̄_m u_{m,k}``, ``y_k = C̄_0 x_k``.

    Args:
        recurrence: :class:`DenseRecurrence` (the first output vector C̄_0 is used).
        state: ``(b, h, N)``.
        inputs_t: ``(m, b, h)``.

    Returns:
        ``(y_t (b, h), state (b, h, N))``.
    """
    A_bar, B_bar, C_bar = recurrence
    channels, size = _check_dense(A_bar)
    _check_dense_vectors("state", state, channels, size, "batch")
    if inputs_t.ndim != 3 or inputs_t.shape[0] != B_bar.shape[0] or inputs_t.shape[2] != channels:
        raise shape_error("inputs_t", inputs_t.shape, f"({B_bar.shape[0]}, batch, {channels})")
    state = (jnp.einsum("hij,bhj->bhi", A_bar, state)
             + jnp.einsum("mhi,mbh->bhi", B_bar, inputs_t.astype(A_bar.dtype)))
    return jnp.einsum("hi,bhi->bh", C_bar[0], state), state
