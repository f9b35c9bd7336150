"""Discretisation of a diagonal SSM: zero-order hold and bilinear."""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from ssmjax.ops.lti.common import _complex_dtype

Discretization = Literal["zoh", "bilinear"]
DISCRETIZATIONS = ("zoh", "bilinear")


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
