"""Shared test helpers: relative error and tolerances by dtype, and fast-compiling jit."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Norm-wise relative error bounds by the dtype of the inputs.
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2, jnp.float16: 5e-3}

# Test programs run once on tiny shapes: compile time is what they spend, and XLA's cheapest
# backend optimisation compiles them about a third faster than the default.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def relative_error(actual, expected) -> float:
    """``‖actual − expected‖ / ‖expected‖`` in float64; NaN anywhere counts as failure."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def real_view(x) -> np.ndarray:
    """``x`` as float64, a complex array as its real and imaginary parts stacked first."""
    x = np.asarray(x)
    if np.iscomplexobj(x):
        return np.stack([x.real, x.imag]).astype(np.float64)
    return x.astype(np.float64)


def compiled_module(fn):
    """``fn(module, *args)`` jitted with FAST_COMPILE, the module passed as graph and state."""
    jitted = jax.jit(lambda graphdef, state, *args: fn(nnx.merge(graphdef, state), *args),
                     static_argnums=0, compiler_options=FAST_COMPILE)
    return lambda module, *args: jitted(*nnx.split(module), *args)
