"""The Mamba mixer (Mamba §3.4, Figure 3) with mamba-ssm's initialisation.

    x, z = in_proj(u)                                  (b, l, 2·d_inner)
    x    = SiLU(causal_conv1d(x))
    Δ, B, C = x_proj(x)                                Δ of rank dt_rank, B and C of size d_state
    Δ    = dt_proj(Δ)                                  its bias is the scan's Δ bias
    y    = selective_scan(x, Δ, A = −exp(A_log), B, C, D, z, softplus)
    out  = out_proj(y)

With ``gated=False`` the block has no z branch (in_proj gives x alone, y is not multiplied by
SiLU(z)): the "no gate" architecture of the Mamba paper's Table 1 ("S6" there).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ssmjax.nn.partitioning import axes
from ssmjax.ops import causal_conv1d, causal_conv1d_step, selective_scan, selective_scan_step
from ssmjax.ops.selective_scan import SCAN_CHUNK_SIZE

# PyTorch's default Linear/Conv1d initialisation, U(±1/sqrt(fan_in)), which mamba-ssm keeps.
torch_default_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def symmetric_uniform(bound: float):
    """Initialiser drawing from U(−bound, bound)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv_parameters(d_inner: int, d_conv: int, conv_bias: bool, param_dtype: jnp.dtype,
                    rngs: nnx.Rngs) -> tuple[nnx.Param, nnx.Param | None]:
    """Depthwise causal conv weight ``(d_inner, d_conv)`` and bias ``(d_inner,)`` (or None),
    initialised as PyTorch's Conv1d: U(±1/sqrt(d_conv))."""
    init = symmetric_uniform(1.0 / math.sqrt(d_conv))
    weight = nnx.Param(init(rngs.params(), (d_inner, d_conv), param_dtype), **axes("inner", None))
    bias = nnx.Param(init(rngs.params(), (d_inner,), param_dtype), **axes("inner")) if conv_bias else None
    return weight, bias


class CausalConvHolder:
    """What a block holding the ``conv_weight`` and ``conv_bias`` of :func:`conv_parameters`
    reads them with (MambaMixer, NoGateBlock)."""

    conv_weight: nnx.Param
    conv_bias: nnx.Param | None

    def conv_params(self) -> tuple[jax.Array, jax.Array | None]:
        """Depthwise conv weight ``(d_inner, d_conv)`` and bias ``(d_inner,)`` or None."""
        return self.conv_weight[...], None if self.conv_bias is None else self.conv_bias[...]


def out_projection(d_inner: int, d_model: int, bias: bool, out_init_scale: float,
                   **linear) -> nnx.Linear:
    """``(..., d_inner) → (..., d_model)``, PyTorch's Linear bound times ``out_init_scale``."""
    return nnx.Linear(d_inner, d_model, use_bias=bias,
                      kernel_init=nnx.initializers.variance_scaling(
                          out_init_scale ** 2 / 3.0, "fan_in", "uniform"),
                      kernel_metadata=axes("inner", "embed"), bias_metadata=axes("embed"), **linear)


def _softplus_scan_step(state, u, delta, A, B, C, D, z, delta_bias):
    return selective_scan_step(state, u, delta, A, B, C, D, z, delta_bias=delta_bias,
                               delta_softplus=True)


class MambaCache(NamedTuple):
    """Recurrent state of one mixer: the last ``d_conv − 1`` conv inputs and the SSM state.

    ``conv_state: (b, d_conv − 1, d_inner)``, ``ssm_state: (b, d_inner, d_state)`` float32.
    """

    conv_state: jax.Array
    ssm_state: jax.Array


def inverse_softplus(x: jax.Array) -> jax.Array:
    """``softplus⁻¹(x) = x + log(−expm1(−x))`` for ``x > 0``."""
    return x + jnp.log(-jnp.expm1(-x))


class MambaMixer(nnx.Module, CausalConvHolder):
    """Selective SSM mixer: ``(b, l, d_model) → (b, l, d_model)``.

    Args:
        d_model: model width.
        d_state: SSM state size N.
        d_conv: width of the causal convolution.
        expand: ``d_inner = expand · d_model``.
        dt_rank: rank of the Δ projection; ``"auto"`` is ``ceil(d_model / 16)``.
        dt_min, dt_max: Δ is initialised log-uniformly in ``[dt_min, dt_max]`` through the
            inverse softplus of the Δ bias (floored at ``dt_init_floor``).
        dt_scale: scale of the Δ projection's uniform initialisation, ``dt_rank^-½ · dt_scale``.
        conv_bias, bias: biases of the convolution and of in/out projections.
        out_init_scale: multiplies the out projection's initial bound (mamba-ssm uses
            ``1/sqrt(n_layer)`` in a language model).
        scan_backend, chunk_size: passed to :func:`ssmjax.ops.selective_scan`.
        gated: multiply the SSM's output by SiLU(z) of a second input projection (Mamba);
            False drops z and its half of ``in_proj`` (the paper's ungated S6 block).
        dtype: compute dtype (``None``: the input's); parameters are ``param_dtype``.
    """

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_scale: float = 1.0, conv_bias: bool = True,
                 bias: bool = False, out_init_scale: float = 1.0, scan_backend: str = "auto",
                 chunk_size: int = SCAN_CHUNK_SIZE, gated: bool = True,
                 dtype: jnp.dtype | None = None, param_dtype: jnp.dtype = jnp.float32,
                 rngs: nnx.Rngs):
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_backend = scan_backend
        self.chunk_size = chunk_size
        self.gated = gated
        self.dtype = dtype
        linear = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        self.in_proj = nnx.Linear(d_model, (2 if gated else 1) * self.d_inner, use_bias=bias,
                                  kernel_init=torch_default_init,
                                  kernel_metadata=axes("embed", "inner"),
                                  bias_metadata=axes("inner"), **linear)
        self.conv_weight, self.conv_bias = conv_parameters(self.d_inner, d_conv, conv_bias,
                                                           param_dtype, rngs)
        self.x_proj = nnx.Linear(self.d_inner, self.dt_rank + 2 * d_state, use_bias=False,
                                 kernel_init=torch_default_init,
                                 kernel_metadata=axes("inner", None), **linear)
        dt_bound = self.dt_rank ** -0.5 * dt_scale
        self.dt_proj = nnx.Linear(self.dt_rank, self.d_inner, use_bias=False,
                                  kernel_init=symmetric_uniform(dt_bound),
                                  kernel_metadata=axes(None, "inner"), **linear)
        log_dt = jax.random.uniform(rngs.params(), (self.d_inner,), jnp.float32,
                                    math.log(dt_min), math.log(dt_max))
        dt = jnp.maximum(jnp.exp(log_dt), dt_init_floor)
        self.dt_bias = nnx.Param(inverse_softplus(dt).astype(param_dtype), **axes("inner"))
        self.A_log = nnx.Param(jnp.log(jnp.broadcast_to(
            jnp.arange(1, d_state + 1, dtype=jnp.float32), (self.d_inner, d_state))).astype(param_dtype),
            **axes("inner", "state"))
        self.D = nnx.Param(jnp.ones((self.d_inner,), param_dtype), **axes("inner"))
        self.out_proj = out_projection(self.d_inner, d_model, bias, out_init_scale, **linear)

    def project_ssm_inputs(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``x: (..., d_inner) → Δ (..., d_inner), B (..., d_state), C (..., d_state)``."""
        dt, B, C = jnp.split(self.x_proj(x), [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
        return self.dt_proj(dt), B, C

    def split_in_proj(self, xz: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """``in_proj`` output ``(..., 2·d_inner)`` → x and the gate z; ``(x, None)`` ungated."""
        return tuple(jnp.split(xz, 2, axis=-1)) if self.gated else (xz, None)

    def __call__(self, hidden: jax.Array, *, cache: MambaCache | None = None,
                 return_cache: bool = False):
        """``hidden: (b, l, d_model) → (b, l, d_model)``.

        With ``cache``, the sequence continues from that recurrent state; with
        ``return_cache``, also returns the state after the last position (a prefill).
        """
        if hidden.ndim != 3 or hidden.shape[-1] != self.d_model:
            raise ValueError(f"hidden has shape {tuple(hidden.shape)}, expected (batch, length, {self.d_model})")
        if self.dtype is not None:
            hidden = hidden.astype(self.dtype)
        x, z = self.split_in_proj(self.in_proj(hidden))
        x, conv_state = causal_conv1d(x, *self.conv_params(), activation="silu",
                                      initial_state=None if cache is None else cache.conv_state,
                                      return_final_state=True)
        dt, B, C = self.project_ssm_inputs(x)
        y, ssm_state = selective_scan(
            x, dt, -jnp.exp(self.A_log[...]), B, C, self.D[...], z,
            delta_bias=self.dt_bias[...], delta_softplus=True,
            initial_state=None if cache is None else cache.ssm_state, return_final_state=True,
            backend=self.scan_backend, chunk_size=self.chunk_size)
        out = self.out_proj(y)
        return (out, MambaCache(conv_state, ssm_state)) if return_cache else out

    def init_cache(self, batch_size: int, dtype: jnp.dtype | None = None) -> MambaCache:
        """Zero recurrent state for ``batch_size`` sequences (conv state in ``dtype``)."""
        dtype = dtype or self.dtype or jnp.float32
        return MambaCache(jnp.zeros((batch_size, self.d_conv - 1, self.d_inner), dtype),
                          jnp.zeros((batch_size, self.d_inner, self.d_state), jnp.float32))

    def step(self, hidden_t: jax.Array, cache: MambaCache, *,
             state_update: Callable | None = None) -> tuple[jax.Array, MambaCache]:
        """One position: ``hidden_t: (b, d_model) → (b, d_model)`` and the next cache.

        ``state_update(state, u, delta, A, B, C, D, z, delta_bias) → (y, state)`` replaces
        :func:`ssmjax.ops.selective_scan_step` (softplus on Δ + bias), e.g. by a fused kernel.
        """
        if self.dtype is not None:
            hidden_t = hidden_t.astype(self.dtype)
        x, z = self.split_in_proj(self.in_proj(hidden_t))
        x, conv_state = causal_conv1d_step(cache.conv_state, x, *self.conv_params(),
                                           activation="silu")
        dt, B, C = self.project_ssm_inputs(x)
        update = state_update or _softplus_scan_step
        y, ssm_state = update(cache.ssm_state, x, dt, -jnp.exp(self.A_log[...]), B, C, self.D[...],
                              z, self.dt_bias[...])
        return self.out_proj(y), MambaCache(conv_state, ssm_state)

