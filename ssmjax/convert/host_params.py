"""Parameters of a :class:`MambaLM` drawn on the host, for tests and benchmarks that need a
model fast.

Building a :class:`MambaLM` through its initialisers runs dozens of small device programs,
each compiled on first use (seconds on a CPU, more for a large model). Every parameter
carries the :class:`~ssmjax.nn.initializers.Initializer` that drew it, and each initialiser
can draw its distribution with NumPy too; :func:`random_params` asks each one for a host
draw, so it takes milliseconds and follows the modules' initialisation by construction (the
values differ from a device initialisation with the same seed; the distributions do not).
Load the result with :func:`~ssmjax.convert.model_from_params`.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from ssmjax.models import MambaConfig, MambaLM
from ssmjax.nn.partitioning import INITIALIZER


def random_params(config: MambaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """``{dotted path: float32 array}`` for every parameter of a :class:`MambaLM` of ``config``,
    each drawn by its own initialiser's host sampler from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    abstract = nnx.state(nnx.eval_shape(lambda: MambaLM(config, rngs=nnx.Rngs(0))), nnx.Param)
    params = {}
    for path, variable in nnx.to_flat_state(abstract):
        name = ".".join(map(str, path))
        init = variable.get_metadata().get(INITIALIZER)
        if init is None:
            raise ValueError(f"parameter {name} carries no initializer in its metadata, expected "
                             "every parameter of a MambaLM to have one (ssmjax.nn.initializers)")
        params[name] = np.asarray(init.sample(rng, variable.get_value().shape), np.float32)
    return params
