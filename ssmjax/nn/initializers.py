"""Parameter initialisers that draw one distribution two ways: on the device and on the host.

A module draws a parameter with ``init(key, shape, dtype)``; the same object rides along in
the parameter's metadata (:data:`ssmjax.nn.partitioning.INITIALIZER`), and
``init.sample(rng, shape)`` draws from the same distribution with NumPy. That is how
:func:`ssmjax.convert.random_params` fills a whole model in milliseconds without compiling its
initialisation, and why it cannot drift from the modules: it has no distributions of its own.

Initialisers are frozen dataclasses (hashable, equal by value): NNX keeps metadata in a
module's graph definition, so two models of one configuration still share compiled functions.
Deterministic initialisers (``random = False``) take no key: the module draws none for them,
which keeps every random draw of a module where it was.

:func:`param` and :func:`linear` build parameters and ``nnx.Linear`` layers with their logical
axes, optimiser group and initialiser in one call.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssmjax.nn.partitioning import axes

Shape = tuple[int, ...]


class Initializer(abc.ABC):
    """``init(key, shape, dtype) → jax.Array`` on the device; ``init.sample(rng, shape) →
    np.ndarray`` (float64) from the same distribution on the host."""

    random: ClassVar[bool] = True

    @abc.abstractmethod
    def __call__(self, key: jax.Array | None, shape: Shape, dtype: jnp.dtype = jnp.float32) -> jax.Array:
        """The initial value, ``shape`` in ``dtype``; ``key`` is None for deterministic ones."""

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator, shape: Shape) -> np.ndarray:
        """A draw of the same distribution with NumPy, float64."""


def fan_in(shape: Shape) -> int:
    """Inputs of a kernel ``(..., in, out)`` (Flax's ``in_axis=-2``, times the receptive field)."""
    return int(np.prod(shape[:-1]))


@dataclasses.dataclass(frozen=True)
class Uniform(Initializer):
    """U(low, high); :meth:`symmetric` is U(±bound), PyTorch's Linear/Conv1d bound 1/sqrt(fan_in)."""

    low: float
    high: float

    @classmethod
    def symmetric(cls, bound: float) -> Uniform:
        return cls(-float(bound), float(bound))

    def __call__(self, key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, self.low, self.high)

    def sample(self, rng, shape):
        return rng.uniform(self.low, self.high, shape)


@dataclasses.dataclass(frozen=True)
class FanInUniform(Initializer):
    """U(±scale/sqrt(fan_in)) for a kernel ``(in, out)``: PyTorch's default Linear weight,
    which mamba-ssm keeps (``scale`` = 1), or its scaled out projection."""

    scale: float = 1.0

    def __call__(self, key, shape, dtype=jnp.float32):
        return nnx.initializers.variance_scaling(self.scale ** 2 / 3.0, "fan_in", "uniform")(key, shape, dtype)

    def sample(self, rng, shape):
        return rng.uniform(-1.0, 1.0, shape) * self.scale / math.sqrt(fan_in(shape))


@dataclasses.dataclass(frozen=True)
class LecunNormal(Initializer):
    """Flax's default kernel: a normal truncated at ±2σ, of variance 1/fan_in."""

    # The standard deviation of a standard normal truncated to [−2, 2].
    TRUNCATED_STD: ClassVar[float] = 0.87962566103423978

    def __call__(self, key, shape, dtype=jnp.float32):
        return nnx.initializers.lecun_normal()(key, shape, dtype)

    def sample(self, rng, shape):
        values = rng.standard_normal(shape)
        outside = np.abs(values) > 2.0
        while outside.any():  # rejection: the truncated normal's own definition
            values[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(values) > 2.0
        return values / (self.TRUNCATED_STD * math.sqrt(fan_in(shape)))


@dataclasses.dataclass(frozen=True)
class Normal(Initializer):
    """N(0, std²)."""

    std: float

    def __call__(self, key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype) * self.std

    def sample(self, rng, shape):
        return rng.normal(0.0, self.std, shape)


class Deterministic(Initializer):
    """An initial value that depends on the shape alone, computed on the host."""

    random = False

    @abc.abstractmethod
    def values(self, shape: Shape) -> np.ndarray:
        """The value of the parameter, ``shape``, float64."""

    def __call__(self, key, shape, dtype=jnp.float32):
        del key
        return jnp.asarray(self.values(shape), dtype)

    def sample(self, rng, shape):
        del rng
        return self.values(shape)


@dataclasses.dataclass(frozen=True)
class Constant(Deterministic):
    """Every entry ``value`` (ones for norm scales and skips, zeros for biases)."""

    value: float

    def values(self, shape):
        return np.full(shape, self.value, np.float64)


@dataclasses.dataclass(frozen=True)
class ComplexConstant(Deterministic):
    """A complex ``value`` stored as real pairs: shape ``(..., 2)`` holding ``[Re, Im]``."""

    value: complex

    def values(self, shape):
        value = complex(self.value)
        return np.broadcast_to(np.asarray([value.real, value.imag]), shape).copy()


ZEROS = Constant(0.0)
ONES = Constant(1.0)


def param(init: Initializer, shape: Shape, *axis_names: str | None, group: str,
          param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs | None = None) -> nnx.Param:
    """An ``nnx.Param`` of ``shape`` drawn by ``init`` (with a key from ``rngs`` if it is
    random), with logical ``axis_names``, optimiser ``group`` and ``init`` as metadata."""
    if init.random and rngs is None:
        raise ValueError(f"rngs is None, but {init} is random: expected an nnx.Rngs")
    key = rngs.params() if init.random else None
    return nnx.Param(init(key, shape, param_dtype), **axes(*axis_names, group=group, init=init))


def linear(in_features: int, out_features: int, *, kernel_init: Initializer,
           kernel_axes: tuple[str | None, str | None], use_bias: bool = True,
           bias_init: Initializer = ZEROS, bias_axis: str | None = None,
           dtype: jnp.dtype | None = None, param_dtype: jnp.dtype = jnp.float32,
           rngs: nnx.Rngs) -> nnx.Linear:
    """``nnx.Linear`` ``(..., in) → (..., out)``: its kernel in group ``"decay"``, its bias in
    ``"no_decay"``, each with its logical axes and initialiser."""
    return nnx.Linear(in_features, out_features, use_bias=use_bias, kernel_init=kernel_init,
                      bias_init=bias_init,
                      kernel_metadata=axes(*kernel_axes, group="decay", init=kernel_init),
                      bias_metadata=axes(bias_axis, group="no_decay", init=bias_init),
                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)
