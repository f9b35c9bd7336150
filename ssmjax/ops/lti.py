"""Linear time-invariant state space models: S4 (DPLR), S4D (diagonal), S5 (MIMO diagonal)
and the liquid kernel of Liquid-S4. Discretisation, kernels, convolution and recurrences are
separate functions, each naming the equation it evaluates.

Continuous-time SSM and its discretisation with step Δ (S4, background section)::

    x'(t) = A x(t) + B u(t),   y(t) = C x(t) + D u(t)
    x_k = Ā x_{k−1} + B̄ u_k,  y_k = C̄ x_k + D u_k

    zero-order hold (ZOH):  Ā = exp(ΔA),                      B̄ = A⁻¹ (Ā − I) B
    bilinear:               Ā = (I − Δ/2 A)⁻¹ (I + Δ/2 A),     B̄ = (I − Δ/2 A)⁻¹ Δ B

Unrolled from ``x_{−1} = 0`` the recurrence is a convolution with the SSM kernel K̄ (S4)::

    y = K̄ ∗ u + D u,   K̄ = (C̄ B̄, C̄ Ā B̄, …, C̄ Ā^{L−1} B̄)

Conjugate pairs: the state matrices here are complex and diagonal (or diagonal plus low rank)
in an eigenbasis of a real matrix, so their eigenvalues come in conjugate pairs. Arrays carry
one state of each pair (``n = N/2``); the other half is the complex conjugate and real outputs
are ``2 Re(·)`` of the kept half (as in S4D and S5). Functions that need the full basis
build it with :func:`conjugate_pairs`.

All arithmetic runs in float32 / complex64 for float32 inputs (float64 / complex128 for
float64 inputs under ``jax.enable_x64``). Layout of sequences is ``(batch, length, channels)``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssmjax.ops.checks import shape_error
from ssmjax.ops.recurrence import linear_recurrence

Discretization = Literal["zoh", "bilinear"]
DISCRETIZATIONS = ("zoh", "bilinear")


# --------------------------------------------------------------------------- checks


def _complex_dtype(*arrays: jax.Array) -> jnp.dtype:
    """complex128 if any input is 64-bit (float64 or complex128), else complex64."""
    wide = any(jnp.asarray(a).dtype in (jnp.float64, jnp.complex128) for a in arrays)
    return jnp.complex128 if wide else jnp.complex64


def _real_dtype(*arrays: jax.Array) -> jnp.dtype:
    return jnp.float64 if _complex_dtype(*arrays) == jnp.complex128 else jnp.float32


def _check_length(length: int) -> None:
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length is {length!r}, expected a positive integer")


def conjugate_pairs(x: jax.Array, axis: int = -1) -> jax.Array:
    """``[x, conj(x)]`` along ``axis``: the full basis from the kept half of each pair."""
    return jnp.concatenate([x, jnp.conj(x)], axis=axis)


# --------------------------------------------------------------- diagonal discretisation


class DiagonalDiscretization(NamedTuple):
    """A discretised diagonal SSM: ``Ā = exp(log_Lambda_bar)`` and ``B̄``.

    ``log Λ̄`` is kept because powers ``Λ̄^ℓ = exp(ℓ log Λ̄)`` are then exact to rounding for
    every ℓ, where repeated products or ``log(Λ̄)`` would lose the small real part of ΔΛ.
    """

    log_Lambda_bar: jax.Array
    B_bar: jax.Array

    @property
    def Lambda_bar(self) -> jax.Array:
        return jnp.exp(self.log_Lambda_bar)


def discretize_zoh(Lambda: jax.Array, B: jax.Array, delta: jax.Array) -> DiagonalDiscretization:
    """Zero-order hold of a diagonal SSM (S4D and S5's default)::

        Λ̄ = exp(ΔΛ),   B̄ = Λ⁻¹ (Λ̄ − 1) ⊙ B

    ``Λ̄ − 1`` is ``expm1(ΔΛ)``, accurate when ΔΛ is small (Δ ≥ 1e-3 is typical).

    Args:
        Lambda: ``(..., n)`` complex, the diagonal of A.
        B: broadcastable against ``Lambda`` on the trailing state axis (``(..., n)``, or
            ``(h, n)`` for a MIMO input matrix stored transposed as S5 does).
        delta: broadcastable to ``Lambda`` (one step per channel ``(h, 1)`` or per state).

    Returns:
        :class:`DiagonalDiscretization` with ``log Λ̄ = ΔΛ`` (shape of ``Lambda``) and B̄.
    """
    dtype = _complex_dtype(Lambda, B, delta)
    Lambda = jnp.asarray(Lambda, dtype)
    delta_Lambda = jnp.asarray(delta).astype(dtype) * Lambda
    return DiagonalDiscretization(delta_Lambda, jnp.expm1(delta_Lambda) / Lambda * B)


def discretize_bilinear(Lambda: jax.Array, B: jax.Array, delta: jax.Array) -> DiagonalDiscretization:
    """Bilinear (Tustin) discretisation of a diagonal SSM (S4's, with A diagonal)::

        Λ̄ = (1 + ΔΛ/2) / (1 − ΔΛ/2),   B̄ = Δ / (1 − ΔΛ/2) ⊙ B

    Shapes as :func:`discretize_zoh`; ``log Λ̄ = log1p(ΔΛ/2) − log1p(−ΔΛ/2)``.
    """
    dtype = _complex_dtype(Lambda, B, delta)
    delta = jnp.asarray(delta).astype(dtype)
    half_step = delta * jnp.asarray(Lambda, dtype) / 2
    log_Lambda_bar = jnp.log1p(half_step) - jnp.log1p(-half_step)
    return DiagonalDiscretization(log_Lambda_bar, delta / (1 - half_step) * B)


def discretize_diagonal(Lambda: jax.Array, B: jax.Array, delta: jax.Array,
                        method: Discretization = "zoh") -> DiagonalDiscretization:
    """:func:`discretize_zoh` or :func:`discretize_bilinear` by name."""
    if method == "zoh":
        return discretize_zoh(Lambda, B, delta)
    if method == "bilinear":
        return discretize_bilinear(Lambda, B, delta)
    raise ValueError(f"method is {method!r}, expected one of {DISCRETIZATIONS}")


# ------------------------------------------------------------ diagonal kernel and views


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
                         state: jax.Array | None = None) -> jax.Array:
    """State after a sequence, ``x_{L−1} = Λ̄^L x_{−1} + Σ_j Λ̄^{L−1−j} B̄ u_j``.

    Args:
        log_Lambda_bar, B_bar: ``(h, n)``.
        u: ``(b, L, h)``.
        state: ``(b, h, n)``, x_{−1} (zero if omitted).

    Returns:
        ``(b, h, n)`` complex.
    """
    _check_diagonal(log_Lambda_bar, B_bar=B_bar)
    if u.ndim != 3 or u.shape[2] != log_Lambda_bar.shape[0]:
        raise shape_error("u", u.shape, f"(batch, length, {log_Lambda_bar.shape[0]})")
    if state is not None and state.shape != (u.shape[0], *log_Lambda_bar.shape):
        channels, n = log_Lambda_bar.shape
        raise shape_error("state", state.shape, f"({u.shape[0]}, {channels}, {n})")
    length = u.shape[1]
    reversed_powers = diagonal_powers(log_Lambda_bar, length)[..., ::-1]
    final = jnp.einsum("blh,hn,hnl->bhn", u.astype(B_bar.dtype), B_bar, reversed_powers)
    if state is not None:
        final = final + jnp.exp(length * log_Lambda_bar) * state
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


# ------------------------------------------------------------------- FFT convolution


def fft_conv(u: jax.Array, causal_kernel: jax.Array | None = None,
             anticausal_kernel: jax.Array | None = None) -> jax.Array:
    """Long convolution by FFT, one kernel per channel::

        y_t = Σ_{s≤t} K_{t−s} u_s  +  Σ_{s>t} K^←_{s−t−1} u_s

    The second sum is the backward direction of a bidirectional layer: an SSM run on the
    time-reversed sequence, shifted by one step so that ``u_t`` is counted once (by the
    forward kernel). Padding to ``2L`` makes the circular convolution a linear one.

    Args:
        u: ``(b, L, h)``, or ``(m, b, L, h)`` to sum the convolutions of m inputs with m kernels.
        causal_kernel, anticausal_kernel: ``(h, ≥L)`` or ``(m, h, ≥L)``; only the first L taps
            are used. At least one must be given.

    Returns:
        ``y``: ``(b, L, h)`` in float32 (float64 for float64 inputs).
    """
    if causal_kernel is None and anticausal_kernel is None:
        raise ValueError("causal_kernel and anticausal_kernel are both None, expected at least one")
    if u.ndim not in (3, 4):
        raise shape_error("u", u.shape, "(batch, length, channels) or (m, batch, length, channels)")
    length, channels = u.shape[-2:]
    dtype = _real_dtype(u, *(k for k in (causal_kernel, anticausal_kernel) if k is not None))
    taps = jnp.zeros((*u.shape[:-3], channels, 2 * length), dtype)
    for name, kernel in (("causal_kernel", causal_kernel), ("anticausal_kernel", anticausal_kernel)):
        if kernel is None:
            continue
        if kernel.shape[:-1] != (*u.shape[:-3], channels) or kernel.shape[-1] < length:
            leading = "".join(f"{size}, " for size in (*u.shape[:-3], channels))
            raise shape_error(name, kernel.shape, f"({leading}≥{length})")
        kernel = kernel[..., :length].astype(dtype)
        if name == "causal_kernel":
            taps = taps.at[..., :length].add(kernel)
        else:  # K^←_i sits at circular lag −(i + 1), i.e. index 2L − 1 − i
            taps = taps.at[..., length + 1:].add(kernel[..., :length - 1][..., ::-1])
    u_f = jnp.fft.rfft(u.astype(dtype), n=2 * length, axis=-2)
    k_f = jnp.swapaxes(jnp.fft.rfft(taps, axis=-1), -1, -2)
    y_f = u_f * k_f[..., None, :, :]
    if u.ndim == 4:
        y_f = y_f.sum(0)
    return jnp.fft.irfft(y_f, n=2 * length, axis=-2)[..., :length, :]


# ------------------------------------------------------------------- S4: DPLR kernel


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


# -------------------------------------------------------- S4: the recurrent (dense) view


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


class DenseRecurrence(NamedTuple):
    """A discretised SSM with a dense real state matrix: ``x_k = Ā x_{k−1} + Σ_m B̄_m u_{m,k}``,
    ``y_k = C̄ x_k``. ``A_bar: (h, N, N)``, ``B_bar: (m, h, N)``, ``C_bar: (c, h, N)``, real."""

    A_bar: jax.Array
    B_bar: jax.Array
    C_bar: jax.Array


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
                      state: jax.Array | None = None) -> jax.Array:
    """State after a sequence, ``x_{L−1} = Ā^L x_{−1} + Σ_m Σ_j Ā^{L−1−j} B̄_m u_{m,j}``.

    Args:
        A_bar: ``(h, N, N)``; B_bar: ``(m, h, N)``.
        inputs: ``(m, b, L, h)``, the sequence fed through each B̄_m.
        state: ``(b, h, N)`` (zero if omitted).

    Returns:
        ``(b, h, N)``.
    """
    channels, size = _check_dense(A_bar)
    _check_dense_vectors("B_bar", B_bar, channels, size, "m")
    if inputs.ndim != 4 or inputs.shape[0] != B_bar.shape[0] or inputs.shape[3] != channels:
        raise shape_error("inputs", inputs.shape, f"({B_bar.shape[0]}, batch, length, {channels})")
    if state is not None:
        _check_dense_vectors("state", state, channels, size, "batch")
    length = inputs.shape[2]
    columns = dense_power_series(A_bar, B_bar, length)[..., ::-1]                       # (m, h, N, L)
    final = jnp.einsum("mblh,mhnl->bhn", inputs.astype(A_bar.dtype), columns)
    if state is not None:
        final = final + jnp.einsum("hij,bhj->bhi", jnp.linalg.matrix_power(A_bar, length), state)
    return final


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


# ------------------------------------------------------------------ S5: MIMO diagonal scan


def s5_scan(Lambda_bar: jax.Array, B_bar: jax.Array, C_tilde: jax.Array, u: jax.Array,
            initial_state: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """S5's parallel scan, with S5's conjugate symmetry::

        x_k = Λ̄ ⊙ x_{k−1} + B̄ u_k,   y_k = 2 Re(C̃ x_k)

    evaluated for all k by :func:`ssmjax.ops.linear_recurrence` (an associative scan).

    Args:
        Lambda_bar: ``(n,)`` complex, one state of each conjugate pair (n = P/2).
        B_bar: ``(h, n)`` complex, B̄ᵀ (the input matrix, transposed).
        C_tilde: ``(h, n)`` complex.
        u: ``(b, L, h)`` real.
        initial_state: ``(b, n)`` complex, x_{−1}.

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
    states = linear_recurrence(decay, drive, initial_state)
    return 2 * jnp.einsum("bln,hn->blh", states, C_tilde).real, states[:, -1]


def s5_step(Lambda_bar: jax.Array, B_bar: jax.Array, C_tilde: jax.Array, state: jax.Array,
            u_t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step of :func:`s5_scan`: ``state: (b, n)``, ``u_t: (b, h)`` → ``(y_t (b, h), state)``."""
    if state.ndim != 2 or state.shape[1] != Lambda_bar.shape[0]:
        raise shape_error("state", state.shape, f"(batch, {Lambda_bar.shape[0]})")
    if u_t.shape != (state.shape[0], B_bar.shape[0]):
        raise shape_error("u_t", u_t.shape, f"({state.shape[0]}, {B_bar.shape[0]})")
    state = Lambda_bar * state + jnp.einsum("bh,hn->bn", u_t.astype(B_bar.dtype), B_bar)
    return 2 * jnp.einsum("bn,hn->bh", state, C_tilde).real, state


# ------------------------------------------------------------- Liquid-S4: liquid kernel


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


def next_history(u: jax.Array, count: int, history: jax.Array | None = None) -> jax.Array:
    """The last ``count`` inputs of ``[history, u]`` along time: ``(b, count, h)``."""
    if history is not None:
        u = jnp.concatenate([history.astype(u.dtype), u], axis=1)
    if u.shape[1] < count:
        u = jnp.pad(u, ((0, 0), (count - u.shape[1], 0), (0, 0)))
    return u[:, u.shape[1] - count:]


__all__ = [
    "DISCRETIZATIONS", "DenseRecurrence", "DiagonalDiscretization", "conjugate_pairs",
    "dense_final_state", "dense_power_series", "dense_state_response", "dense_step",
    "diagonal_final_state", "diagonal_powers", "diagonal_state_response", "diagonal_step",
    "discretize_bilinear", "discretize_diagonal", "discretize_zoh", "dplr_bilinear",
    "dplr_bilinear_input", "dplr_continuous_input", "dplr_kernel", "dplr_recurrence",
    "fft_conv", "input_products", "liquid_input_vectors", "next_history", "s5_scan", "s5_step",
    "vandermonde_kernel",
]
