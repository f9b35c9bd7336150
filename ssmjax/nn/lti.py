"""Pieces shared by the LTI layers (S4, Liquid-S4, S4D, S5): their base :class:`LTILayer`,
the output head, the recurrent cache, the initialisers of Λ, C and log Δ, and complex
parameters stored as real pairs.

Every LTI layer is a :class:`~ssmjax.nn.protocols.SequenceMixer`, causal unless
``bidirectional``::

    y, cache = layer(hidden (b, l, d_model), *, mask=None, cache=None, return_cache=False)
    layer.init_cache(batch_size) -> LTICache
    layer.step(hidden_t (b, d_model), cache) -> ((b, d_model), LTICache)

and the same block around it (``ResidualBlock`` adds the norm and the residual). Inside,
per channel, ``y = SSM(u) + D ⊙ u`` in float32, then the output head of the papers::

    "glu"        y ← W₁ GELU(y) ⊙ σ(W₂ GELU(y))    S4's postact="glu", S5's "full_glu"
    "half_glu"   y ← GELU(y) ⊙ σ(W GELU(y))         S5's "half_glu1"
    "linear"     y ← W GELU(y)                      S4's postact=None
    "none"       y ← GELU(y)                        S5's "gelu"

(GELU is skipped with ``activation=None``; "glu" is one ``d → 2d`` projection split in two.)

Padding (``mask``): the input is zero at padded positions before the SSM. The SSM is linear
in its input, so a zero adds nothing to any output, in either direction of a bidirectional
layer; the head is position-wise, and outputs at padded positions are set to zero.

Optimiser groups: the state-space parameters (Λ as ``log_neg_lambda_real``/``lambda_imag``,
S4's ``P`` and ``B``, S4D's and S5's ``B``, ``log_dt``/``log_step``) are ``"ssm"``; ``C``
and the head's weights ``"decay"`` (the S4 and S5 recipes train C at the normal rate); ``D``
and the head's biases ``"no_decay"``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssmjax.nn.initializers import (ZEROS, Deterministic, Initializer, LecunNormal, Normal, Uniform,
                                    linear, param)
from ssmjax.nn.protocols import (check_call, check_causal, check_step_input, zero_padding)
from ssmjax.ops.hippo import hippo_legs_nplr, hippo_n_blocks, s4d_inv_eigenvalues, s4d_lin_eigenvalues
from ssmjax.ops.lti import DISCRETIZATIONS

OutputMode = Literal["glu", "half_glu", "linear", "none"]
OUTPUT_MODES = ("glu", "half_glu", "linear", "none")
Activation = Literal["gelu"] | None
BIDIRECTIONAL = "bidirectional=True: its backward SSM reads later inputs"


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


def real_pair_values(x: np.ndarray) -> np.ndarray:
    """Complex ``(...)`` → float64 ``(..., 2)`` holding ``[Re, Im]``, on the host."""
    return np.stack([np.real(x), np.imag(x)], axis=-1)


def log_uniform_steps(dt_min: float, dt_max: float) -> Uniform:
    """The initialiser of ``log Δ`` with Δ log-uniform in ``[dt_min, dt_max]`` (S4, S4D and
    S5 defaults)."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"dt_min={dt_min}, dt_max={dt_max}: expected 0 < dt_min <= dt_max")
    return Uniform(math.log(dt_min), math.log(dt_max))


@dataclasses.dataclass(frozen=True)
class ComplexNormal(Initializer):
    """A complex normal with E|C|² = 1 (S4's C), as real pairs ``(..., 2)``: each part N(0, ½)."""

    def __call__(self, key, shape, dtype=jnp.float32):
        return (jax.random.normal(key, shape, jnp.float32) / np.sqrt(2)).astype(dtype)

    def sample(self, rng, shape):
        return rng.normal(0.0, 1.0, shape) / np.sqrt(2)


SPECTRA = {"legs": lambda d_state, blocks: hippo_legs_nplr(d_state).Lambda[:d_state // 2],
           "s4d_lin": lambda d_state, blocks: s4d_lin_eigenvalues(d_state),
           "s4d_inv": lambda d_state, blocks: s4d_inv_eigenvalues(d_state),
           "hippo_n": lambda d_state, blocks: hippo_n_blocks(d_state, blocks)[0]}


@dataclasses.dataclass(frozen=True)
class Spectrum(Deterministic):
    """Λ of an LTI layer at initialisation, one state of each conjugate pair, as one of its two
    parameters: ``part="log_neg_real"`` is ``log(−Re Λ)``, ``"imag"`` is ``Im Λ``.

    ``family``: ``"legs"`` (S4's HiPPO-LegS in its NPLR eigenbasis), ``"s4d_lin"``,
    ``"s4d_inv"`` (S4D) or ``"hippo_n"`` (S5's HiPPO-N in ``blocks`` blocks); the parameter's
    last axis holds N/2 states, the eigenvalues repeat over any axes before it.
    """

    family: str
    part: str
    blocks: int = 1

    def values(self, shape):
        Lambda = np.broadcast_to(SPECTRA[self.family](2 * shape[-1], self.blocks), shape)
        return np.log(-Lambda.real) if self.part == "log_neg_real" else Lambda.imag


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
        torch_init: projections initialised as PyTorch's ``nn.Linear``, U(±1/sqrt(d)) for
            weights and biases (S4, S4D, Liquid-S4); otherwise LeCun normal weights and zero
            biases (Flax, as S5).
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
            torch_bound = Uniform.symmetric(1.0 / math.sqrt(d_model))
            kernel_init, bias_init = (torch_bound, torch_bound) if torch_init else (LecunNormal(), ZEROS)
            self.proj = linear(d_model, width, kernel_init=kernel_init, kernel_axes=("embed", None),
                               bias_init=bias_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
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
    the float32 SSM input under any compute dtype, padding, and no recurrent view when
    bidirectional.

    Subclasses call :meth:`_init_spectrum` first and :meth:`_init_skip_and_head` last in
    their constructor (the head draws the last random numbers, so that a layer's
    initialisation depends only on its own order of draws), and implement the SSM itself:
    :meth:`_ssm` (a whole sequence), :meth:`_ssm_step` (one position) and :meth:`_zero_cache`.
    """

    d_model: int
    d_state: int
    bidirectional: bool
    dtype: jnp.dtype | None

    def _init_spectrum(self, d_model: int, d_state: int, bidirectional: bool,
                       dtype: jnp.dtype | None, family: str, shape: tuple[int, ...],
                       param_dtype: jnp.dtype, *axis_names: str | None, blocks: int = 1) -> None:
        """Sets the shared attributes and ``Λ`` (complex, Re Λ < 0) of :class:`Spectrum`
        ``family`` as two real parameters ``log_neg_lambda_real, lambda_imag`` of ``shape``
        with the logical ``axis_names``."""
        self.d_model = d_model
        self.d_state = d_state
        self.bidirectional = bidirectional
        self.dtype = dtype
        for name, part in (("log_neg_lambda_real", "log_neg_real"), ("lambda_imag", "imag")):
            setattr(self, name, param(Spectrum(family, part, blocks), shape, *axis_names, group="ssm",
                                      param_dtype=param_dtype))

    def _init_channel_readout_and_steps(self, dt_min: float, dt_max: float,
                                        param_dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        """One SSM per channel (S4, Liquid-S4, S4D): ``C (c, d_model, N/2, 2)``, a complex normal
        with E|C|² = 1 (as S4) per direction c, then ``log_dt (d_model,)`` log-uniform."""
        directions = 2 if self.bidirectional else 1
        self.C = param(ComplexNormal(), (directions, self.d_model, self.d_state // 2, 2), None, "embed",
                       "state", None, group="decay", param_dtype=param_dtype, rngs=rngs)
        self.log_dt = param(log_uniform_steps(dt_min, dt_max), (self.d_model,), "embed", group="ssm",
                            param_dtype=param_dtype, rngs=rngs)

    def _init_skip_and_head(self, *, activation: Activation, output: OutputMode, torch_init: bool,
                            param_dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        """``D (d_model,)`` standard normal, then the output head."""
        self.D = param(Normal(1.0), (self.d_model,), "embed", group="no_decay",
                       param_dtype=param_dtype, rngs=rngs)
        self.head = OutputHead(self.d_model, activation=activation, output=output,
                               torch_init=torch_init, dtype=self.dtype, param_dtype=param_dtype,
                               rngs=rngs)

    @property
    def causal(self) -> bool:
        return not self.bidirectional

    def spectrum(self) -> jax.Array:
        """``Λ`` complex64, the shape of its parameters."""
        return jax.lax.complex(-jnp.exp(self.log_neg_lambda_real[...].astype(jnp.float32)),
                               self.lambda_imag[...].astype(jnp.float32))

    def _output(self, y: jax.Array, u: jax.Array, dtype: jnp.dtype) -> jax.Array:
        """``head(y + D ⊙ u)`` in ``dtype``; ``y, u: (..., d_model)`` float32."""
        return self.head((y + self.D[...].astype(jnp.float32) * u).astype(dtype))

    def _ssm(self, u: jax.Array, cache: LTICache | None, lengths: jax.Array | None,
             return_cache: bool) -> tuple[jax.Array, LTICache | None]:
        """``y = SSM(u)`` for ``u: (b, L, d_model)`` float32 (zero past each row's length),
        continuing from ``cache``; with ``return_cache`` also the cache after each row's last
        valid position (its ``lengths``, or L when None)."""
        raise NotImplementedError(f"{type(self).__name__} implements no _ssm")

    def _ssm_step(self, u_t: jax.Array, cache: LTICache, **hooks: Any) -> tuple[jax.Array, LTICache]:
        """One position of the SSM: ``u_t: (b, d_model)`` float32 → ``(y_t, next cache)``."""
        raise NotImplementedError(f"{type(self).__name__} implements no _ssm_step")

    def _zero_cache(self, batch_size: int) -> LTICache:
        raise NotImplementedError(f"{type(self).__name__} implements no _zero_cache")

    def __call__(self, hidden: jax.Array, *, mask: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: LTICache | None = None,
                 return_cache: bool = False) -> tuple[jax.Array, LTICache | None]:
        """``hidden: (b, L, d_model) → (b, L, d_model)`` and, with ``return_cache``, the state
        after each row's last valid position (a prefill); ``cache`` continues a sequence from
        its state. Both need a causal layer (``bidirectional=False``). ``mask``,
        ``segment_ids``: see :mod:`ssmjax.nn.protocols`."""
        lengths = check_call(self, hidden, mask=mask, segment_ids=segment_ids, cache=cache,
                             return_cache=return_cache, why_not_causal=BIDIRECTIONAL)
        if self.dtype is not None:
            hidden = hidden.astype(self.dtype)
        u = zero_padding(hidden.astype(jnp.float32), lengths)
        y, new_cache = self._ssm(u, cache, lengths, return_cache)
        return zero_padding(self._output(y, u, hidden.dtype), lengths), new_cache

    def init_cache(self, batch_size: int, dtype: jnp.dtype | None = None) -> LTICache:
        """The zero state of ``batch_size`` sequences (its dtype is the layer's whatever
        ``dtype``: float32 or complex64)."""
        del dtype
        check_causal(self.causal, "init_cache", self, BIDIRECTIONAL)
        return self._zero_cache(batch_size)

    def step(self, hidden_t: jax.Array, cache: LTICache, **hooks: Any) -> tuple[jax.Array, LTICache]:
        """One position: ``hidden_t: (b, d_model) → (b, d_model)`` and the next cache;
        ``hooks``: S4's and Liquid-S4's ``recurrence``."""
        check_causal(self.causal, "step", self, BIDIRECTIONAL)
        check_step_input(hidden_t, self.d_model)
        if self.dtype is not None:
            hidden_t = hidden_t.astype(self.dtype)
        y, cache = self._ssm_step(hidden_t.astype(jnp.float32), cache, **hooks)
        return self._output(y, hidden_t.astype(jnp.float32), hidden_t.dtype), cache
