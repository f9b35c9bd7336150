"""Pre-norm residual block: ``r ← r + mixer(norm(r))``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ssmjax.nn.norm import RMSNorm
from ssmjax.nn.protocols import (Cache, SequenceMixer, check_sequence, check_step_input,
                                 sequence_lengths, zero_padding)


class ResidualBlock(nnx.Module):
    """Any :class:`~ssmjax.nn.protocols.SequenceMixer` behind an RMSNorm on the residual
    stream; a SequenceMixer itself, causal when its mixer is.

    The residual stream keeps its own dtype (float32 when the model asks for
    ``residual_in_fp32``, as mamba-ssm); the mixer runs in its compute dtype (the norm's
    output dtype is the mixer's ``dtype`` attribute when it has one) and its output is added
    back in the stream's dtype. Padded positions are zero in the output, the residual too.
    """

    def __init__(self, mixer: SequenceMixer, *, norm_eps: float = 1e-5):
        self.norm = RMSNorm(mixer.d_model, eps=norm_eps, dtype=getattr(mixer, "dtype", None))
        self.mixer = mixer

    @property
    def d_model(self) -> int:
        return self.mixer.d_model

    @property
    def causal(self) -> bool:
        return self.mixer.causal

    def __call__(self, residual: jax.Array, *, mask: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: Cache | None = None,
                 return_cache: bool = False) -> tuple[jax.Array, Cache | None]:
        """``residual: (b, l, d_model) → (b, l, d_model)`` and the mixer's cache (``None``
        unless ``return_cache``); the other arguments go to the mixer, which checks them."""
        check_sequence(residual, self.d_model, "residual")
        out, cache = self.mixer(self.norm(residual), mask=mask, segment_ids=segment_ids,
                                cache=cache, return_cache=return_cache)
        lengths = sequence_lengths(mask, residual)
        return zero_padding(residual + out.astype(residual.dtype), lengths), cache

    def step(self, residual_t: jax.Array, cache: Cache, **hooks: Any) -> tuple[jax.Array, Cache]:
        """``residual_t: (b, d_model) → (b, d_model)`` and the next cache; ``hooks`` go to the
        mixer's ``step``."""
        check_step_input(residual_t, self.d_model)
        out, cache = self.mixer.step(self.norm(residual_t), cache, **hooks)
        return residual_t + out.astype(residual_t.dtype), cache

    def init_cache(self, batch_size: int, dtype: jnp.dtype | None = None) -> Cache:
        return self.mixer.init_cache(batch_size, dtype)
