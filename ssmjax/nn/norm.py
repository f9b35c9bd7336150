"""Root-mean-square layer normalisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ssmjax.nn.initializers import ONES, param


class RMSNorm(nnx.Module):
    """``y = x / sqrt(mean(x², -1) + eps) · weight``, computed in float32.

    Args:
        dim: size of the normalised (last) axis.
        eps: added to the mean square.
        dtype: output dtype; ``None`` keeps the input's.
    """

    def __init__(self, dim: int, *, eps: float = 1e-5, dtype: jnp.dtype | None = None,
                 param_dtype: jnp.dtype = jnp.float32):
        self.weight = param(ONES, (dim,), "embed", group="no_decay", param_dtype=param_dtype)
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: (..., dim) → (..., dim)``."""
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.weight[...].astype(jnp.float32)).astype(self.dtype or x.dtype)
