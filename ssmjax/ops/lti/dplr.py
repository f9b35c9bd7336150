"""S4's diagonal-plus-low-rank SSM: the Cauchy/Woodbury kernel and its recurrent view."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssmjax.ops.checks import shape_error
from ssmjax.ops.lti.common import _check_length, _complex_dtype, conjugate_pairs
from ssmjax.ops.lti.dense import DenseRecurrence


def _check_dplr(Lambda, P, Q, delta) -> tuple[int, int, int]:
    if Lambda.ndim != 2:
        raise shape_error("Lambda", Lambda.shape, "(channels, n)")
    channels, n = Lambda.shape
    if P.ndim != 3 or P.shape[0] != channels or P.shape[2] != n:
        raise shape_error("P", P.shape, f"({channels}, rank, {n})")
    if Q.shape != P.shape:
        raise shape_error("Q", Q.shape, f"{tuple(P.shape)} like P")
    if jnp.shape(delta) != (channels,):
        raise shape_error("delta", jnp.shape(delta), f"({channels},)")
    return channels, n, P.shape[1]


def _check_vectors(name: str, x: jax.Array, channels: int, n: int) -> None:
    if x.ndim not in (2, 3) or x.shape[-2:] != (channels, n):
        raise shape_error(name, x.shape, f"({channels}, {n}) or (m, {channels}, {n})")


def _solve_small(matrix: jax.Array, rhs: jax.Array) -> jax.Array:
    """``matrix⁻¹ rhs`` for a batch of r × r systems; division when r = 1 (the HiPPO rank)."""
    if matrix.shape[-1] == 1:
        return rhs / matrix
    return jnp.linalg.solve(matrix, rhs)


def dplr_kernel(Lambda: jax.Array, P: jax.Array, Q: jax.Array, B: jax.Array, C: jax.Array,
                delta: jax.Array, length: int) -> jax.Array:
    """S4's convolution kernel for ``A = Λ − P Q*`` (S4 Algorithm 1 and its appendix).

    1. The truncated generating function at the L-th roots of unity ``z_k = e^{−2πik/L}``,
       where ``z^L = 1`` turns ``Σ_{ℓ<L} C̄ Ā^ℓ B̄ z^ℓ`` into ``C̃ (I − Ā z)⁻¹ B̄`` with
       ``C̃ = C̄ (I − Ā^L)``; S4 learns C̃ directly, so C here is C̃.
    2. With the bilinear Ā, B̄ this is ``2/(1+z) · C̃ (g(z) − A)⁻¹ B`` with
       ``g(z) = (2/Δ)(1−z)/(1+z)``. Multiplied through by (1+z), so that the Nyquist root
       z = −1 (even L) stays finite::

           K̂(z) = 2 C̃ (D(z) + (1+z) P Q*)⁻¹ B,    D(z) = (2/Δ)(1−z) − (1+z) Λ

    3. Woodbury: ``(D + U V*)⁻¹ = D⁻¹ − D⁻¹ U (I + V* D⁻¹ U)⁻¹ V* D⁻¹``, so K̂ needs four
       Cauchy sums ``k_{ab}(z) = Σ_n a_n b_n / D_n(z)`` over the full basis (each conjugate
       pair contributes ``v/(…λ…) + v̄/(…λ̄…)``)::

           K̂(z) = 2 [k_{C̃B} − (1+z) k_{C̃P} (I + (1+z) k_{Q*P})⁻¹ k_{Q*B}]

    4. ``K̄ = irfft(K̂)`` over the ``L//2 + 1`` non-negative frequencies (K̄ is real).

    Args:
        Lambda: ``(h, n)`` complex, one eigenvalue of each conjugate pair.
        P, Q: ``(h, r, n)`` complex, the low-rank factors in the same basis (S4 ties Q = P).
        B: ``(h, n)`` or ``(m, h, n)`` complex: m input vectors (Liquid-S4's liquid orders).
        C: ``(h, n)`` or ``(c, h, n)`` complex: C̃, c output vectors (2 when bidirectional).
        delta: ``(h,)`` positive steps Δ.
        length: L.

    Returns:
        ``(c, m, h, L)`` real, with the c and m axes dropped where ``C`` and ``B`` were 2-D.
    """
    _check_length(length)
    channels, n, rank = _check_dplr(Lambda, P, Q, delta)
    _check_vectors("B", B, channels, n)
    _check_vectors("C", C, channels, n)
    dtype = _complex_dtype(Lambda, P, Q, B, C, delta)
    Lambda, P, Q, B_, C_ = (jnp.asarray(x, dtype) for x in (Lambda, P, Q, B, C))
    B_ = B_.reshape(-1, channels, n)
    C_ = C_.reshape(-1, channels, n)

    z = jnp.asarray(np.exp(-2j * np.pi * np.arange(length // 2 + 1) / length), dtype)  # (F,)
    two_over_delta = (2 / jnp.asarray(delta)).astype(dtype)[:, None, None]            # (h, 1, 1)
    one_minus_z, one_plus_z = (1 - z)[None, :, None], (1 + z)[None, :, None]
    inverse = 1 / (two_over_delta * one_minus_z - one_plus_z * Lambda[:, None, :])     # (h, F, n)
    inverse_conj = 1 / (two_over_delta * one_minus_z - one_plus_z * jnp.conj(Lambda)[:, None, :])

    # All four Cauchy sums Σ_full a_n b_n / D_n(z) at once: rows a ∈ {C̃, Q*} times columns
    # b ∈ {B, P}, each conjugate pair contributing v/D(λ) + v̄/D(λ̄).
    left = jnp.concatenate([C_, jnp.conj(jnp.swapaxes(Q, 0, 1))])                     # (c + r, h, n)
    right = jnp.concatenate([B_, jnp.swapaxes(P, 0, 1)])                               # (m + r, h, n)
    numerators = left[:, None] * right[None]                                           # (c+r, m+r, h, n)
    sums = (jnp.einsum("abhn,hfn->abhf", numerators, inverse)
            + jnp.einsum("abhn,hfn->abhf", jnp.conj(numerators), inverse_conj))
    c, m = C_.shape[0], B_.shape[0]
    k_CB, k_CP = sums[:c, :m], sums[:c, m:]                                            # (c, m|r, h, F)
    k_QB, k_QP = sums[c:, :m], sums[c:, m:]                                            # (r, m|r, h, F)

    scale = 1 + z                                                                      # (F,)
    capacitance = jnp.eye(rank, dtype=dtype) + scale[:, None, None] * jnp.moveaxis(k_QP, (0, 1), (2, 3))
    correction = _solve_small(capacitance, jnp.moveaxis(k_QB, (0, 1), (2, 3)))         # (h, F, r, m)
    generating = 2 * (k_CB - scale * jnp.einsum("crhf,hfrm->cmhf", k_CP, correction))
    kernel = jnp.fft.irfft(generating, n=length, axis=-1)
    if C.ndim == 2:
        kernel = kernel[0]
    if B.ndim == 2:
        kernel = kernel[..., 0, :, :]
    return kernel


def dplr_bilinear(Lambda: jax.Array, P: jax.Array, Q: jax.Array, B: jax.Array,
                  delta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bilinear discretisation of ``A = Λ − P Q*`` in the full basis (S4's recurrent view)::

        Ā = A₁ A₀,  B̄ = 2 A₁ B,  with  A₀ = (2/Δ) I + A,
        A₁ = ((2/Δ) I − A)⁻¹ = D − D P (I + Q* D P)⁻¹ Q* D,  D = diag(1 / ((2/Δ) − Λ))

    Args:
        Lambda: ``(h, n)``; P, Q: ``(h, r, n)``; B: ``(..., h, n)``, complex, kept halves.
        delta: ``(h,)``.

    Returns:
        ``Ā: (h, N, N)`` and ``B̄: (..., h, N)`` complex with ``N = 2n``, in the full basis
        ``[kept half, conjugates]`` (dense: this is the step-by-step view).
    """
    channels, n, rank = _check_dplr(Lambda, P, Q, delta)
    if B.shape[-2:] != (channels, n):
        raise shape_error("B", B.shape, f"(..., {channels}, {n})")
    dtype = _complex_dtype(Lambda, P, Q, B, delta)
    Lambda, P, Q, B = (conjugate_pairs(jnp.asarray(x, dtype)) for x in (Lambda, P, Q, B))
    two_over_delta = (2 / jnp.asarray(delta)).astype(dtype)[:, None]                   # (h, 1)
    size = 2 * n
    eye = jnp.eye(size, dtype=dtype)
    A = Lambda[:, :, None] * eye - jnp.einsum("hri,hrj->hij", P, jnp.conj(Q))
    A0 = two_over_delta[..., None] * eye + A
    D = 1 / (two_over_delta - Lambda)                                                  # (h, N)
    DP = D[:, None, :] * P                                                             # (h, r, N)
    QD = jnp.conj(Q) * D[:, None, :]                                                   # (h, r, N)
    capacitance = jnp.eye(rank, dtype=dtype) + jnp.einsum("hsn,htn->hst", jnp.conj(Q), DP)
    A1 = D[:, :, None] * eye - jnp.einsum("hti,htj->hij", DP, _solve_small(capacitance, QD))
    return A1 @ A0, 2 * jnp.einsum("hij,...hj->...hi", A1, B)


def _real_basis(n: int, dtype) -> tuple[jax.Array, jax.Array]:
    """``T`` and ``T⁻¹`` with ``x = T r`` mapping ``r = [Re x_h, Im x_h]`` to ``[x_h, conj(x_h)]``."""
    eye = np.eye(n)
    T = np.block([[eye, 1j * eye], [eye, -1j * eye]])
    T_inverse = 0.5 * np.block([[eye, eye], [-1j * eye, 1j * eye]])
    return jnp.asarray(T, dtype), jnp.asarray(T_inverse, dtype)


def dplr_recurrence(Lambda: jax.Array, P: jax.Array, Q: jax.Array, B: jax.Array,
                    C_tilde: jax.Array, delta: jax.Array, length: int) -> DenseRecurrence:
    """The recurrent view of :func:`dplr_kernel`, in a real basis, for step-by-step use.

    Ā and B̄ from :func:`dplr_bilinear`; C̄ recovered from the learned C̃ = C̄ (I − Ā^L)
    (S4 Algorithm 1, first step) by ``C̄ = C̃ (I − Ā^L)⁻¹``. The complex pair basis is then
    changed to real coordinates ``r = [Re x_h, Im x_h]`` (``x = T r``): Ā ← T⁻¹ Ā T,
    B̄ ← T⁻¹ B̄, C̄ ← C̄ T, all real, so the state is a real vector of size N = 2n and
    ``y = C̄ x`` needs no ``Re``. For k < L its impulse response equals the kernel.

    Args:
        Lambda, P, Q, delta: as :func:`dplr_kernel`.
        B: ``(h, n)`` or ``(m, h, n)``.
        C_tilde: ``(h, n)`` or ``(c, h, n)``.
        length: L, the kernel length that C̃ was defined for.

    Returns:
        :class:`DenseRecurrence` with ``B_bar: (m, h, N)`` and ``C_bar: (c, h, N)``.
    """
    _check_length(length)
    channels, n, _ = _check_dplr(Lambda, P, Q, delta)
    _check_vectors("B", B, channels, n)
    _check_vectors("C_tilde", C_tilde, channels, n)
    B = B.reshape(-1, channels, n)
    dtype = _complex_dtype(Lambda, P, Q, B, C_tilde, delta)
    A_bar, B_bar = dplr_bilinear(Lambda, P, Q, B, delta)
    T, T_inverse = _real_basis(n, dtype)
    A_bar = (T_inverse @ A_bar @ T).real
    B_bar = jnp.einsum("ij,mhj->mhi", T_inverse, B_bar).real
    C_full = conjugate_pairs(jnp.asarray(C_tilde, dtype).reshape(-1, channels, n))
    C_tilde = jnp.einsum("chj,ji->chi", C_full, T).real
    eye = jnp.eye(2 * n, dtype=A_bar.dtype)
    transfer = eye - jnp.linalg.matrix_power(A_bar, length)                            # I − Ā^L
    C_bar = jnp.linalg.solve(jnp.swapaxes(transfer, -1, -2)[None], C_tilde[..., None])[..., 0]
    return DenseRecurrence(A_bar, B_bar, C_bar)
