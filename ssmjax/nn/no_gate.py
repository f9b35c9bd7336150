"""Mamba's block without its gate, around any sequence layer: the "no gate" architecture of
the Mamba paper's Table 1 (Selective Copying), whose S4 row is this block with an S4 layer::

    x    = SiLU(conv1d(in_proj(hidden)))     (b, l, d_inner), causal depthwise conv
    y    = layer(x)                          any (b, l, d_inner) → (b, l, d_inner) layer
    out  = out_proj(y)                       (b, l, d_model)

Its S6 row is ``MambaMixer(gated=False)``, where the layer is the selective scan with its
input-dependent projections. Projections and conv are initialised as in :class:`MambaMixer`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ssmjax.nn.mamba import CausalConvHolder, conv_parameters, in_projection, out_projection
from ssmjax.nn.protocols import SequenceMixer, check_call, check_causal, check_step_input, zero_padding


class NoGateCache(NamedTuple):
    """``conv_state: (b, d_conv − 1, d_inner)`` and the inner layer's own cache."""

    conv_state: jax.Array
    layer_cache: Any


class NoGateBlock(nnx.Module, CausalConvHolder):
    """``(b, l, d_model) → (b, l, d_model)``: in_proj, causal conv, SiLU, ``layer``, out_proj;
    a :class:`~ssmjax.nn.protocols.SequenceMixer`, causal when its layer is.

    Args:
        d_model: model width.
        layer: the sequence layer, a SequenceMixer of width ``layer.d_model`` (= d_inner,
            e.g. 2·d_model).
        d_conv: conv kernel size; conv_bias, bias: biases of the conv and the projections.
        out_init_scale: multiplies the out projection's initial bound (1/sqrt(n_layer) in an LM).
        dtype: compute dtype (``None``: the input's); parameters are ``param_dtype``.

    Optimiser groups as :class:`~ssmjax.nn.MambaMixer`'s: weights ``"decay"``, biases
    ``"no_decay"``; the layer's own parameters keep theirs.
    """

    def __init__(self, d_model: int, layer: SequenceMixer, *, d_conv: int = 4,
                 conv_bias: bool = True, bias: bool = False, out_init_scale: float = 1.0,
                 dtype: jnp.dtype | None = None, param_dtype: jnp.dtype = jnp.float32,
                 rngs: nnx.Rngs):
        self.d_model = d_model
        self.d_inner = layer.d_model
        self.d_conv = d_conv
        self.dtype = dtype
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.in_proj = in_projection(d_model, self.d_inner, bias, **options)
        self.conv_weight, self.conv_bias = conv_parameters(self.d_inner, d_conv, conv_bias,
                                                           param_dtype, rngs)
        self.layer = layer
        self.out_proj = out_projection(self.d_inner, d_model, bias, out_init_scale, **options)

    @property
    def causal(self) -> bool:
        return self.layer.causal

    def _why_not_causal(self) -> str:
        return f"its layer, a {type(self.layer).__name__}, is not causal"

    def __call__(self, hidden: jax.Array, *, mask: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: NoGateCache | None = None,
                 return_cache: bool = False) -> tuple[jax.Array, NoGateCache | None]:
        """``hidden: (b, l, d_model) → (b, l, d_model)`` and, with ``return_cache``, the cache
        after each row's last valid position; ``cache`` continues a sequence. ``mask`` reaches
        the layer, so a bidirectional one never reads padding."""
        lengths = check_call(self, hidden, mask=mask, segment_ids=segment_ids, cache=cache,
                             return_cache=return_cache, why_not_causal=self._why_not_causal())
        if self.dtype is not None:
            hidden = hidden.astype(self.dtype)
        x, conv_state = self.causal_conv(self.in_proj(hidden),
                                         None if cache is None else cache.conv_state, lengths)
        y, layer_cache = self.layer(x, mask=mask, cache=None if cache is None else cache.layer_cache,
                                    return_cache=return_cache)
        out = zero_padding(self.out_proj(y.astype(x.dtype)), lengths)
        return out, NoGateCache(conv_state, layer_cache) if return_cache else None

    def init_cache(self, batch_size: int, dtype: jnp.dtype | None = None) -> NoGateCache:
        """Zero conv state (in ``dtype``) and the layer's zero cache for ``batch_size`` sequences."""
        check_causal(self.causal, "init_cache", self, self._why_not_causal())
        return NoGateCache(self.init_conv_state(batch_size, dtype or self.dtype or jnp.float32),
                           self.layer.init_cache(batch_size))

    def step(self, hidden_t: jax.Array, cache: NoGateCache, **hooks: Any) -> tuple[jax.Array, NoGateCache]:
        """One position: ``hidden_t: (b, d_model) → (b, d_model)`` and the next cache;
        ``hooks`` go to the layer's ``step`` (e.g. S4's precomputed ``recurrence``)."""
        check_causal(self.causal, "step", self, self._why_not_causal())
        check_step_input(hidden_t, self.d_model)
        if self.dtype is not None:
            hidden_t = hidden_t.astype(self.dtype)
        x, conv_state = self.conv_step(self.in_proj(hidden_t), cache.conv_state)
        y, layer_cache = self.layer.step(x, cache.layer_cache, **hooks)
        return self.out_proj(y.astype(x.dtype)), NoGateCache(conv_state, layer_cache)
