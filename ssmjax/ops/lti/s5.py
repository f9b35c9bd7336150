"""S5's MIMO diagonal SSM: the parallel scan and one step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssmjax.ops.checks import shape_error
from ssmjax.ops.lti.common import _check_lengths
from ssmjax.ops.recurrence import linear_recurrence


def s5_scan(Lambda_bar: jax.Array, B_bar: jax.Array, C_tilde: jax.Array, u: jax.Array,
            initial_state: jax.Array | None = None,
            lengths: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """S5's parallel scan, with S5's conjugate symmetry::

        x_k = Λ̄ ⊙ x_{k−1} + B̄ u_k,   y_k = 2 Re(C̃ x_k)

    evaluated for all k by :func:`ssmjax.ops.linear_recurrence` (an associative scan).

    Args:
        Lambda_bar: ``(n,)`` complex, one state of each conjugate pair (n = P/2).
        B_bar: ``(h, n)`` complex, B̄ᵀ (the input matrix, transposed).
        C_tilde: ``(h, n)`` complex.
        u: ``(b, L, h)`` real.
        initial_state: ``(b, n)`` complex, x_{−1}.
        lengths: ``(b,)``, return the state after each row's first ``lengths[i]`` inputs
            (its last valid position) instead of the last one.

    Returns:
        ``y: (b, L, h)`` real (without the D u term) and the final state ``(b, n)``.
    """
    if Lambda_bar.ndim != 1:
        raise shape_error("Lambda_bar", Lambda_bar.shape, "(n,)")
    n = Lambda_bar.shape[0]
    if u.ndim != 3:
        raise shape_error("u", u.shape, "(batch, length, channels)")
    channels = u.shape[2]
    for name, matrix in (("B_bar", B_bar), ("C_tilde", C_tilde)):
        if matrix.shape != (channels, n):
            raise shape_error(name, matrix.shape, f"({channels}, {n})")
    drive = jnp.einsum("blh,hn->bln", u.astype(B_bar.dtype), B_bar)
    decay = jnp.broadcast_to(Lambda_bar, drive.shape)
    _check_lengths(lengths, u.shape[0])
    states = linear_recurrence(decay, drive, initial_state)
    y = 2 * jnp.einsum("bln,hn->blh", states, C_tilde).real
    if lengths is None:
        return y, states[:, -1]
    last = jnp.take_along_axis(states, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
    start = jnp.zeros_like(last) if initial_state is None else initial_state.astype(last.dtype)
    return y, jnp.where((lengths > 0)[:, None], last, start)


def s5_step(Lambda_bar: jax.Array, B_bar: jax.Array, C_tilde: jax.Array, state: jax.Array,
            u_t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step of :func:`s5_scan`: ``state: (b, n)``, ``u_t: (b, h)`` → ``(y_t (b, h), state)``."""
    if state.ndim != 2 or state.shape[1] != Lambda_bar.shape[0]:
        raise shape_error("state", state.shape, f"(batch, {Lambda_bar.shape[0]})")
    if u_t.shape != (state.shape[0], B_bar.shape[0]):
        raise shape_error("u_t", u_t.shape, f"({state.shape[0]}, {B_bar.shape[0]})")
    state = Lambda_bar * state + jnp.einsum("bh,hn->bn", u_t.astype(B_bar.dtype), B_bar)
    return 2 * jnp.einsum("bn,hn->bh", state, C_tilde).real, state
