"""Liquid-S4: input products, the bilinear input vectors of the liquid kernels, and the
input history of the recurrent view."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssmjax.ops.checks import shape_error
from ssmjax.ops.lti.dplr import _check_dplr


def input_products(u: jax.Array, order: int, history: jax.Array | None = None) -> jax.Array:
    """Causal input correlations of Liquid-S4 up to ``order`` p::

        U^{(q)}_k = u_k u_{k−1} ⋯ u_{k−q+1},   q = 1 … p   (U^{(1)} = u)

    Inputs before the sequence are ``history`` (zeros if omitted).

    Args:
        u: ``(b, L, h)``.
        order: p ≥ 1.
        history: ``(b, p − 1, h)``, the inputs before ``u``, oldest first.

    Returns:
        ``(p, b, L, h)``.
    """
    if not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"order is {order!r}, expected a positive integer")
    if u.ndim != 3:
        raise shape_error("u", u.shape, "(batch, length, channels)")
    batch, length, channels = u.shape
    if history is None:
        history = jnp.zeros((batch, order - 1, channels), u.dtype)
    elif history.shape != (batch, order - 1, channels):
        raise shape_error("history", history.shape, f"({batch}, {order - 1}, {channels})")
    padded = jnp.concatenate([history.astype(u.dtype), u], axis=1)
    products = [u]
    for lag in range(1, order):
        start = order - 1 - lag
        products.append(products[-1] * padded[:, start:start + length])
    return jnp.stack(products)


def dplr_bilinear_input(Lambda: jax.Array, P: jax.Array, Q: jax.Array, B: jax.Array,
                        delta: jax.Array) -> jax.Array:
    """B̄ = 2 ((2/Δ) I − A)⁻¹ B of :func:`dplr_bilinear`, kept half only, in O(N r) per channel.

    Full-basis sums ``Σ_full`` of conjugate-symmetric terms are ``2 Re Σ_half``.

    Args:
        Lambda: ``(h, n)``; P, Q: ``(h, r, n)``; B: ``(..., h, n)``; delta: ``(h,)``.

    Returns:
        ``(..., h, n)`` complex.
    """
    _, _, rank = _check_dplr(Lambda, P, Q, delta)
    D = 1 / (2 / jnp.asarray(delta)[:, None] - Lambda)                                 # (h, n)
    capacitance = jnp.eye(rank) + 2 * jnp.einsum("hsn,hn,htn->hst", jnp.conj(Q), D, P).real
    projected = 2 * jnp.einsum("hsn,hn,...hn->...hs", jnp.conj(Q), D, B).real           # Q* D B
    weights = jnp.linalg.solve(capacitance, projected[..., None])[..., 0] if rank > 1 else (
        projected / capacitance[..., 0])
    return 2 * D * (B - jnp.einsum("hsn,...hs->...hn", P, weights.astype(P.dtype)))


def dplr_continuous_input(Lambda: jax.Array, P: jax.Array, Q: jax.Array, B_bar: jax.Array,
                          delta: jax.Array) -> jax.Array:
    """The inverse of :func:`dplr_bilinear_input`: the B whose bilinear B̄ is ``B_bar``::

        B = ½ ((2/Δ) I − A) B̄ = ½ [((2/Δ) − Λ) ⊙ B̄ + P (Q* B̄)]

    Shapes as :func:`dplr_bilinear_input`.
    """
    _check_dplr(Lambda, P, Q, delta)
    projected = 2 * jnp.einsum("hsn,...hn->...hs", jnp.conj(Q), B_bar).real             # Q* B̄
    direct = (2 / jnp.asarray(delta)[:, None] - Lambda) * B_bar
    return 0.5 * (direct + jnp.einsum("hsn,...hs->...hn", P, projected.astype(P.dtype)))


def liquid_input_vectors(Lambda: jax.Array, P: jax.Array, Q: jax.Array, B: jax.Array,
                         delta: jax.Array, order: int) -> jax.Array:
    """Input vectors of the liquid kernels of Liquid-S4, in continuous form.

    The liquid kernel of order q (Hasani et al. 2022, the "KB" kernel) is the S4 kernel with
    B̄ replaced by its q-th power, ``K̄^{(q)}_ℓ = C̄ Ā^ℓ B̄^q``, where the input-dependent
    transition ``B̄ u_k`` acts on the state elementwise (in the eigenbasis), so ``B̄^q`` is
    the elementwise power. :func:`dplr_kernel` takes continuous inputs, so each ``B̄^q`` is
    mapped back through :func:`dplr_continuous_input`.

    Args:
        Lambda, P, Q, delta: as :func:`dplr_kernel`; B: ``(h, n)``.
        order: p ≥ 1.

    Returns:
        ``(p, h, n)``: ``[B, B^{(2)}, …, B^{(p)}]`` with bilinear discretisations ``B̄^q``.
    """
    if not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"order is {order!r}, expected a positive integer")
    B_bar = dplr_bilinear_input(Lambda, P, Q, B, delta)
    powers = jnp.stack([B_bar ** q for q in range(2, order + 1)]) if order > 1 else None
    if powers is None:
        return B[None]
    return jnp.concatenate([B[None], dplr_continuous_input(Lambda, P, Q, powers, delta)])


def next_history(u: jax.Array, count: int, history: jax.Array | None = None,
                 lengths: jax.Array | None = None) -> jax.Array:
    """The last ``count`` inputs of ``[history, u]`` along time: ``(b, count, h)``.

    Args:
        u: ``(b, L, h)``.
        count: how many inputs to keep (≥ 0).
        history: ``(b, ≥ count, h)``, the inputs before ``u`` (zeros if omitted).
        lengths: ``(b,)``, keep the last inputs before position ``lengths[i]`` of row i (the
            end of its valid part) instead of before the end of ``u``.
    """
    batch, _, channels = u.shape
    if history is None:
        history = jnp.zeros((batch, count, channels), u.dtype)
    elif history.ndim != 3 or history.shape[0] != batch or history.shape[1] < count or \
            history.shape[2] != channels:
        raise shape_error("history", history.shape, f"({batch}, >= {count}, {channels})")
    joined = jnp.concatenate([history[:, history.shape[1] - count:].astype(u.dtype), u], axis=1)
    if lengths is None:
        return joined[:, joined.shape[1] - count:]
    return jax.vmap(lambda row, end: jax.lax.dynamic_slice_in_dim(row, end, count))(joined, lengths)
