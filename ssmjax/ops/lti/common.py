"""Shape errors, dtypes and the conjugate-pair basis shared by the LTI functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssmjax.ops.checks import shape_error


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


def right_align(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """``x: (..., b, L, h)`` with each row's first ``lengths[i]`` positions moved to the end
    and zeros before them: the row as if its valid part ended at the last position, so that
    a sum over "the last L inputs" reads exactly its valid part. ``lengths: (b,)``."""
    length = x.shape[-2]
    positions = jnp.arange(length)
    x = jnp.where((positions < lengths[:, None])[..., None], x, jnp.zeros((), x.dtype))
    source = (positions + lengths[:, None]) % length                                    # (b, L)
    return jnp.take_along_axis(x, jnp.broadcast_to(source[..., None], x.shape), axis=-2)


def _check_lengths(lengths: jax.Array | None, batch: int) -> None:
    if lengths is not None and jnp.shape(lengths) != (batch,):
        raise shape_error("lengths", jnp.shape(lengths), f"({batch},)")
