"""Random parameters drawn on the host, for tests and benchmarks that need a model fast.

Building a :class:`MambaLM` through its initialisers runs dozens of small device programs,
each compiled on first use (seconds on a CPU); drawing the same shapes with NumPy and
loading them with :func:`~ssmjax.convert.model_from_params` takes milliseconds. The ranges
are those of the initialisers (mamba-ssm's): uniform ±1/sqrt(fan_in) projections, A = −(1…N),
D = 1, Δ bias the inverse softplus of a log-uniform Δ in [dt_min, dt_max].
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from ssmjax.models import MambaConfig, MambaLM


def random_params(config: MambaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """``{dotted path: float32 array}`` for every parameter of a :class:`MambaLM` of ``config``."""
    rng = np.random.default_rng(seed)
    abstract = nnx.state(nnx.eval_shape(lambda: MambaLM(config, rngs=nnx.Rngs(0))), nnx.Param)
    params = {}
    for path, variable in nnx.to_flat_state(abstract):
        name, shape = ".".join(map(str, path)), variable.get_value().shape
        leaf = path[-1]
        if leaf == "A_log":
            value = np.broadcast_to(np.log(np.arange(1, shape[1] + 1)), shape)
        elif leaf in ("D", "weight"):  # skip connection, norm scales
            value = np.ones(shape)
        elif leaf == "dt_bias":
            dt = np.exp(rng.uniform(np.log(config.dt_min), np.log(config.dt_max), shape))
            value = dt + np.log(-np.expm1(-dt))
        elif leaf == "embedding":
            value = rng.normal(0.0, 0.02, shape)
        elif leaf == "bias":
            value = np.zeros(shape)
        else:  # projections (in, out), conv weight (d, k) and bias (d,): fan-in is axis 0 / k
            fan_in = shape[-1] if leaf in ("conv_weight", "conv_bias") else shape[0]
            fan_in = config.d_conv if leaf == "conv_bias" else fan_in
            value = rng.uniform(-1.0, 1.0, shape) / np.sqrt(fan_in)
        params[name] = np.asarray(value, np.float32)
    return params
