"""Shape errors, dtypes and the conjugate-pair basis shared by the LTI functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _shape_error(name: str, got, expected: str) -> ValueError:
    return ValueError(f"{name} has shape {tuple(got)}, expected {expected}")


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
