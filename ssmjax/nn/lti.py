"""Pieces shared by the LTI layers (S4, Liquid-S4, S4D, S5): their base :class:`LTILayer`,
the output head, the recurrent cache, log-uniform Δ and complex parameters stored as real
pairs.

Every LTI layer is a mixer with the interface of :class:`ssmjax.nn.MambaMixer`::

    layer(hidden (b, l, d_model), *, cache=None, return_cache=False) -> (b, l, d_model)
    layer.init_cache(batch_size) -> LTICache
    layer.step(hidden_t (b, d_model), cache) -> ((b, d_model), LTICache)

and the same block around it (``ResidualBlock`` adds the norm and the residual). Inside,
per channel, ``y = SSM(u) + D ⊙ u`` in float32, then the output head of the papers::

    "glu"        y ← W₁ GELU(y) ⊙ σ(W₂ GELU(y))    S4's postact="glu", S5's "full_glu"
    "half_glu"   y ← GELU(y) ⊙ σ(W GELU(y))         S5's "half_glu1"
    "linear"     y ← W GELU(y)                      S4's postact=None
    "none"       y ← GELU(y)                        S5's "gelu"

(GELU is skipped with ``activation=None``; "glu" is one ``d → 2d`` projection split in two.)
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssmjax.nn.partitioning import axes
from ssmjax.ops.lti import DISCRETIZATIONS

OutputMode = Literal["glu", "half_glu", "linear", "none"]
OUTPUT_MODES = ("glu", "half_glu", "linear", "none")
Activation = Literal["gelu"] | None


class LTICache(NamedTuple):
    """Recurrent state of one LTI layer.

    ``state``: ``(b, d_model, N)`` float32 for S4 and Liquid-S4 (the real basis of
    :func:`ssmjax.ops.lti.dplr_recurrence`), ``(b, d_model, N/2)`` complex64 for S4D,
    ``(b, P/2)`` complex64 for S5. ``history``: ``(b, p − 1, d_model)`` float32, the last
    p − 1 inputs of a Liquid-S4 layer of order p (its input products need them); ``None``
    for the other layers.
    """

    state: jax.Array
    history: jax.Array | None = None


def as_real_pair(x: jax.Array, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Complex ``(...)`` → real ``(..., 2)`` holding ``[Re, Im]``: what optimizers see."""
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1).astype(dtype)


def as_complex(pair: jax.Array) -> jax.Array:
    """Real ``(..., 2)`` → complex64 ``(...)``."""
    pair = pair.astype(jnp.float32)
    return jax.lax.complex(pair[..., 0], pair[..., 1])


def log_uniform_log_dt(key: jax.Array, shape: tuple[int, ...], dt_min: float,
                       dt_max: float) -> jax.Array:
    """``log Δ`` with Δ log-uniform in ``[dt_min, dt_max]`` (S4, S4D and S5 defaults)."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"dt_min={dt_min}, dt_max={dt_max}: expected 0 < dt_min <= dt_max")
    return jax.random.uniform(key, shape, jnp.float32, math.log(dt_min), math.log(dt_max))


def torch_linear_init(fan_in: int):
    """U(±1/sqrt(fan_in)), PyTorch's default for the weights and biases of ``nn.Linear``."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def check_head_options(activation: Activation, output: OutputMode) -> None:
    """``ValueError`` for an unknown activation or output mode (before any parameter is drawn)."""
    if activation not in ("gelu", None):
        raise ValueError(f"activation is {activation!r}, expected 'gelu' or None")
    if output not in OUTPUT_MODES:
        raise ValueError(f"output is {output!r}, expected one of {OUTPUT_MODES}")


class OutputHead(nnx.Module):
    """Activation and position-wise output mixing after the SSM: ``(..., d) → (..., d)``.

    Args:
        d_model: width d.
        activation: ``"gelu"`` (exact, erf form) or ``None``.
        output: one of :data:`OUTPUT_MODES` (see the module docstring).
        torch_init: projections initialised as PyTorch's ``nn.Linear`` (S4, S4D, Liquid-S4);
            otherwise LeCun normal weights and zero biases (Flax, as S5).
        dtype: compute dtype (``None``: the input's); parameters are ``param_dtype``.
    """

    def __init__(self, d_model: int, *, activation: Activation = "gelu",
                 output: OutputMode = "glu", torch_init: bool = True,
                 dtype: jnp.dtype | None = None, param_dtype: jnp.dtype = jnp.float32,
                 rngs: nnx.Rngs):
        check_head_options(activation, output)
        self.activation = activation
        self.output = output
        width = {"glu": 2 * d_model, "half_glu": d_model, "linear": d_model, "none": 0}[output]
        if width:
            inits = (dict(kernel_init=torch_linear_init(d_model), bias_init=torch_linear_init(d_model))
                     if torch_init else {})
            self.proj = nnx.Linear(d_model, width, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                                   kernel_metadata=axes("embed", None), bias_metadata=axes(None),
                                   **inits)
        else:
            self.proj = None

    def __call__(self, y: jax.Array) -> jax.Array:
        """``y: (..., d) → (..., d)``."""
        if self.activation == "gelu":
            y = jax.nn.gelu(y, approximate=False)
        if self.output == "glu":
            value, gate = jnp.split(self.proj(y), 2, axis=-1)
            return value * jax.nn.sigmoid(gate)
        if self.output == "half_glu":
            return y * jax.nn.sigmoid(self.proj(y))
        if self.output == "linear":
            return self.proj(y)
        return y


def check_hidden(hidden: jax.Array, d_model: int, name: str = "hidden") -> None:
    """``ValueError`` unless ``hidden`` is ``(batch, length, d_model)``."""
    if hidden.ndim != 3 or hidden.shape[-1] != d_model:
        raise ValueError(f"{name} has shape {tuple(hidden.shape)}, expected (batch, length, {d_model})")


def check_hidden_t(hidden_t: jax.Array, d_model: int) -> None:
    """``ValueError`` unless ``hidden_t`` is ``(batch, d_model)``."""
    if hidden_t.ndim != 2 or hidden_t.shape[-1] != d_model:
        raise ValueError(f"hidden_t has shape {tuple(hidden_t.shape)}, expected (batch, {d_model})")


def check_even_state(d_state: int) -> None:
    if not isinstance(d_state, int) or d_state < 2 or d_state % 2:
        raise ValueError(f"d_state is {d_state!r}, expected an even integer >= 2 (conjugate pairs)")


def check_layer_options(d_state: int, activation: Activation, output: OutputMode,
                        discretization: str | None = None) -> None:
    """A layer's constructor checks, before any parameter is drawn: even ``d_state``, a known
    head, and (when given) a known ``discretization``."""
    check_even_state(d_state)
    check_head_options(activation, output)
    if discretization is not None and discretization not in DISCRETIZATIONS:
        raise ValueError(f"discretization is {discretization!r}, expected one of {DISCRETIZATIONS}")


class LTILayer(nnx.Module):
    """What S4, Liquid-S4, S4D and S5 share around their SSMs (the module docstring's
    contract): a spectrum Λ kept stable (Re Λ = −exp(·)), the skip ``D``, the output head,
    the float32 SSM input under any compute dtype, and no recurrent view when bidirectional.

    Subclasses call :meth:`_init_spectrum` first and :meth:`_init_skip_and_head` last in
    their constructor (the head draws the last random numbers, so that a layer's
    initialisation depends only on its own order of draws).
    """

    d_model: int
    d_state: int
    bidirectional: bool
    dtype: jnp.dtype | None

    def _init_spectrum(self, d_model: int, d_state: int, bidirectional: bool,
                       dtype: jnp.dtype | None, Lambda: np.ndarray, param_dtype: jnp.dtype,
                       *axis_names: str | None) -> None:
        """Sets the shared attributes and ``Λ`` (complex, Re Λ < 0) as two real parameters
        ``log_neg_lambda_real, lambda_imag`` with the logical ``axis_names``."""
        self.d_model = d_model
        self.d_state = d_state
        self.bidirectional = bidirectional
        self.dtype = dtype
        Lambda = np.asarray(Lambda)
        self.log_neg_lambda_real = nnx.Param(jnp.asarray(np.log(-Lambda.real), param_dtype),
                                             **axes(*axis_names))
        self.lambda_imag = nnx.Param(jnp.asarray(Lambda.imag, param_dtype), **axes(*axis_names))

    def _init_channel_readout_and_steps(self, dt_min: float, dt_max: float,
                                        param_dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        """One SSM per channel (S4, Liquid-S4, S4D): ``C (c, d_model, N/2, 2)``, a complex normal
        with E|C|² = 1 (as S4) per direction c, then ``log_dt (d_model,)`` log-uniform."""
        directions = 2 if self.bidirectional else 1
        C = jax.random.normal(rngs.params(), (directions, self.d_model, self.d_state // 2, 2),
                              jnp.float32) / np.sqrt(2)
        self.C = nnx.Param(C.astype(param_dtype), **axes(None, "embed", "state", None))
        self.log_dt = nnx.Param(log_uniform_log_dt(rngs.params(), (self.d_model,), dt_min, dt_max)
                                .astype(param_dtype), **axes("embed"))

    def _init_skip_and_head(self, *, activation: Activation, output: OutputMode, torch_init: bool,
                            param_dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        """``D (d_model,)`` standard normal, then the output head."""
        self.D = nnx.Param(jax.random.normal(rngs.params(), (self.d_model,), param_dtype),
                           **axes("embed"))
        self.head = OutputHead(self.d_model, activation=activation, output=output,
                               torch_init=torch_init, dtype=self.dtype, param_dtype=param_dtype,
                               rngs=rngs)

    def spectrum(self) -> jax.Array:
        """``Λ`` complex64, the shape of its parameters."""
        return jax.lax.complex(-jnp.exp(self.log_neg_lambda_real[...].astype(jnp.float32)),
                               self.lambda_imag[...].astype(jnp.float32))

    def _sequence_input(self, hidden: jax.Array, cache: LTICache | None,
                        return_cache: bool) -> tuple[jax.Array, jax.Array]:
        """Checks a sequence call; ``(hidden in the compute dtype, u float32)``."""
        check_hidden(hidden, self.d_model)
        if self.bidirectional and (cache is not None or return_cache):
            raise ValueError("cache and return_cache need a causal layer; this one is bidirectional")
        if self.dtype is not None:
            hidden = hidden.astype(self.dtype)
        return hidden, hidden.astype(jnp.float32)

    def _step_input(self, hidden_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Checks a step call; ``(hidden_t in the compute dtype, u_t float32)``."""
        if self.bidirectional:
            raise ValueError("step needs a causal layer; this one is bidirectional")
        check_hidden_t(hidden_t, self.d_model)
        if self.dtype is not None:
            hidden_t = hidden_t.astype(self.dtype)
        return hidden_t, hidden_t.astype(jnp.float32)

    def _output(self, y: jax.Array, u: jax.Array, dtype: jnp.dtype) -> jax.Array:
        """``head(y + D ⊙ u)`` in ``dtype``; ``y, u: (..., d_model)`` float32."""
        return self.head((y + self.D[...].astype(jnp.float32) * u).astype(dtype))
