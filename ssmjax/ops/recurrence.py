"""Diagonal linear recurrences ``h_t = a_t ⊙ h_{t−1} + b_t``, the scan under every SSM here."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compose_affine(first, second):
    """Composition of the affine maps ``h ↦ a h + b``: ``first`` then ``second``.

    Associative, which lets ``lax.associative_scan`` evaluate a recurrence in O(log L) depth.
    """
    a_first, b_first = first
    a_second, b_second = second
    return a_first * a_second, a_second * b_first + b_second


def linear_recurrence(decay: jax.Array, drive: jax.Array,
                      initial_state: jax.Array | None = None, *,
                      reset: jax.Array | None = None) -> jax.Array:
    """All states of ``h_t = decay_t ⊙ h_{t−1} + drive_t`` along axis 1, by associative scan.

    Args:
        decay, drive: ``(b, l, ...)``, real or complex.
        initial_state: ``(b, ...)``, h_{−1} (zero if omitted).
        reset: ``(b, l)`` bool, True where the recurrence restarts: ``decay_t`` is taken as 0
            there, so ``h_t = drive_t`` (packed segments; at t = 0 it drops ``initial_state``).

    Returns:
        ``h: (b, l, ...)``.
    """
    if decay.shape != drive.shape:
        raise ValueError(f"decay has shape {tuple(decay.shape)} but drive has shape "
                         f"{tuple(drive.shape)}; expected equal shapes (batch, length, ...)")
    if reset is not None:
        if reset.shape != decay.shape[:2]:
            raise ValueError(f"reset has shape {tuple(reset.shape)}, expected {decay.shape[:2]} "
                             "(batch, length)")
        decay = jnp.where(reset.reshape(reset.shape + (1,) * (decay.ndim - 2)), 0, decay)
    if initial_state is not None:
        if initial_state.shape != decay.shape[:1] + decay.shape[2:]:
            raise ValueError(f"initial_state has shape {tuple(initial_state.shape)}, expected "
                             f"{decay.shape[:1] + decay.shape[2:]}")
        drive = drive.at[:, 0].add(decay[:, 0] * initial_state)
    return jax.lax.associative_scan(compose_affine, (decay, drive), axis=1)[1]
