"""S4D's diagonal SSM: the Vandermonde kernel and the recurrent views (state response,
final state, one step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssmjax.ops.checks import shape_error
from ssmjax.ops.lti.common import (_check_length, _check_lengths, _real_dtype,
                                   right_align)


def _check_diagonal(log_Lambda_bar: jax.Array, **vectors: jax.Array) -> None:
    """``log_Lambda_bar: (h, n)``; each named vector ``(h, n)`` (``C`` may be ``(c, h, n)``)."""
    if log_Lambda_bar.ndim != 2:
        raise shape_error("log_Lambda_bar", log_Lambda_bar.shape, "(channels, n)")
    shape = tuple(log_Lambda_bar.shape)
    for name, x in vectors.items():
        stacked_ok = name == "C" and x.ndim == 3
        if x.shape[-2:] != shape or not (x.ndim == 2 or stacked_ok):
            expected = f"{shape} or (c, *{shape})" if name == "C" else f"{shape} like log_Lambda_bar"
            raise shape_error(name, x.shape, expected)


def diagonal_powers(log_Lambda_bar: jax.Array, length: int, start: int = 0) -> jax.Array:
    """Vandermonde matrix ``Λ̄^ℓ`` for ``ℓ = start … start + length − 1``: ``(..., n, length)``."""
    _check_length(length)
    exponents = jnp.arange(start, start + length, dtype=_real_dtype(log_Lambda_bar))
    return jnp.exp(log_Lambda_bar[..., None] * exponents)


def vandermonde_kernel(log_Lambda_bar: jax.Array, B_bar: jax.Array, C: jax.Array,
                       length: int) -> jax.Array:
    """S4D's convolution kernel, a Vandermonde product (conjugate pairs folded)::

        K̄_ℓ = 2 Re Σ_n C_n B̄_n Λ̄_n^ℓ,   ℓ = 0 … L−1

    Args:
        log_Lambda_bar, B_bar: ``(h, n)``, one state of each conjugate pair.
        C: ``(h, n)`` or ``(c, h, n)`` (``c = 2`` for the two directions of a bidirectional layer).
        length: L.

    Returns:
        ``(h, L)`` or ``(c, h, L)``, real.
    """
    _check_diagonal(log_Lambda_bar, B_bar=B_bar, C=C)
    powers = diagonal_powers(log_Lambda_bar, length)
    return 2 * jnp.einsum("...hn,hnl->...hl", C * B_bar, powers).real


def diagonal_state_response(log_Lambda_bar: jax.Array, C: jax.Array, state: jax.Array,
                            length: int) -> jax.Array:
    """Output caused by an initial state ``x_{−1}`` alone: ``y_k = 2 Re Σ_n C_n Λ̄_n^{k+1} x_n``.

    Args:
        log_Lambda_bar, C: ``(h, n)``.
        state: ``(b, h, n)`` complex.
        length: L.

    Returns:
        ``(b, L, h)`` real.
    """
    _check_diagonal(log_Lambda_bar, C=C)
    if C.ndim != 2:
        raise shape_error("C", C.shape, f"{tuple(log_Lambda_bar.shape)}")
    if state.ndim != 3 or state.shape[1:] != log_Lambda_bar.shape:
        raise shape_error("state", state.shape, f"(batch, *{tuple(log_Lambda_bar.shape)})")
    powers = diagonal_powers(log_Lambda_bar, length, start=1)
    return 2 * jnp.einsum("hn,bhn,hnl->blh", C, state, powers).real


def diagonal_final_state(log_Lambda_bar: jax.Array, B_bar: jax.Array, u: jax.Array,
                         state: jax.Array | None = None,
                         lengths: jax.Array | None = None) -> jax.Array:
    """State after a sequence, ``x_{L−1} = Λ̄^L x_{−1} + Σ_j Λ̄^{L−1−j} B̄ u_j``.

    Args:
        log_Lambda_bar, B_bar: ``(h, n)``.
        u: ``(b, L, h)``.
        state: ``(b, h, n)``, x_{−1} (zero if omitted).
        lengths: ``(b,)``, the state after each row's first ``lengths[i]`` inputs instead
            (the rest ignored): L becomes ``lengths[i]`` in the sum above.

    Returns:
        ``(b, h, n)`` complex.
    """
    _check_diagonal(log_Lambda_bar, B_bar=B_bar)
    if u.ndim != 3 or u.shape[2] != log_Lambda_bar.shape[0]:
        raise shape_error("u", u.shape, f"(batch, length, {log_Lambda_bar.shape[0]})")
    if state is not None and state.shape != (u.shape[0], *log_Lambda_bar.shape):
        channels, n = log_Lambda_bar.shape
        raise shape_error("state", state.shape, f"({u.shape[0]}, {channels}, {n})")
    _check_lengths(lengths, u.shape[0])
    length = u.shape[1]
    steps = length
    if lengths is not None:
        u = right_align(u, lengths)
        steps = lengths.astype(_real_dtype(log_Lambda_bar))[:, None, None]
    reversed_powers = diagonal_powers(log_Lambda_bar, length)[..., ::-1]
    final = jnp.einsum("blh,hn,hnl->bhn", u.astype(B_bar.dtype), B_bar, reversed_powers)
    if state is not None:
        final = final + jnp.exp(steps * log_Lambda_bar) * state
    return final


def diagonal_step(Lambda_bar: jax.Array, B_bar: jax.Array, C: jax.Array, state: jax.Array,
                  u_t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step ``x_k = Λ̄ ⊙ x_{k−1} + B̄ u_k``, ``y_k = 2 Re Σ_n C_n x_{k,n}``.

    Args:
        Lambda_bar, B_bar, C: ``(h, n)``.
        state: ``(b, h, n)`` complex.
        u_t: ``(b, h)``.

    Returns:
        ``(y_t (b, h) real, state (b, h, n))``.
    """
    if state.ndim != 3 or state.shape[1:] != Lambda_bar.shape:
        raise shape_error("state", state.shape, f"(batch, {', '.join(map(str, Lambda_bar.shape))})")
    if u_t.shape != (state.shape[0], Lambda_bar.shape[0]):
        raise shape_error("u_t", u_t.shape, f"({state.shape[0]}, {Lambda_bar.shape[0]})")
    state = Lambda_bar * state + B_bar * u_t[..., None].astype(B_bar.dtype)
    return 2 * jnp.einsum("hn,bhn->bh", C, state).real, state
