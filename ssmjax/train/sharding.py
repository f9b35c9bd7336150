"""Device mesh and shardings: params by their logical-axis metadata, batches over data axes.

One code path from one CPU to a multi-GPU host to a TPU pod: the mesh has the axes
``("data", "fsdp", "model")``; the batch is split over ``data × fsdp``; each parameter's
logical axes map through :data:`DEFAULT_RULES` to mesh axes (FSDP shards the model width,
the optional model axis shards the inner width and vocabulary). An axis whose size the mesh
axis does not divide stays replicated, so small models run on any mesh.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssmjax.nn.partitioning import LOGICAL_AXES

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("embed", "fsdp"),
    ("inner", "model"),
    ("vocab", "model"),
    ("state", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp, model)`` mesh; ``-1`` for ``data`` takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    if data == -1:
        if len(devices) % (fsdp * model):
            raise ValueError(f"fsdp × model = {fsdp * model} does not divide the {len(devices)} devices")
        data = len(devices) // (fsdp * model)
    if data * fsdp * model != len(devices):
        raise ValueError(f"mesh data={data} × fsdp={fsdp} × model={model} = {data * fsdp * model} "
                         f"does not match the {len(devices)} devices")
    return Mesh(np.asarray(devices).reshape(data, fsdp, model), MESH_AXES)


def _mesh_axis(mesh: Mesh, name: str | None, size: int, rules: dict) -> str | None:
    axis = rules.get(name)
    if axis is None or size % mesh.shape[axis]:
        return None
    return axis


def partition_spec(shape: tuple[int, ...], logical_axes: tuple[str | None, ...] | None,
                   mesh: Mesh, rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES) -> PartitionSpec:
    """The ``PartitionSpec`` of an array of ``shape`` whose axes have ``logical_axes``."""
    if not logical_axes:
        return PartitionSpec()
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {logical_axes} do not match the parameter shape {shape}")
    rules = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(logical_axes, shape):
        axis = _mesh_axis(mesh, name, size, rules)
        spec.append(None if axis in used else axis)  # a mesh axis shards one array axis at most
        used.add(axis)
    return PartitionSpec(*spec)


def state_shardings(state: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES) -> Any:
    """Shardings for an ``nnx.State`` (params, optimizer state) from its variables' metadata."""

    def sharding(variable):
        value = variable.get_value() if isinstance(variable, nnx.Variable) else variable
        names = variable.get_metadata().get(LOGICAL_AXES) if isinstance(variable, nnx.Variable) else None
        spec = partition_spec(np.shape(value), names, mesh, rules)
        return variable.replace(NamedSharding(mesh, spec)) if isinstance(variable, nnx.Variable) \
            else NamedSharding(mesh, spec)

    return jax.tree.map(sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over ``data × fsdp``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def jit_under_mesh(fn: Callable, mesh: Mesh, **jit_kwargs) -> Callable:
    """``jax.jit(fn, **jit_kwargs)``, traced and run with ``mesh`` set (``jax.set_mesh``).

    Code inside that XLA cannot partition by itself (the Pallas scan) reads the mesh while
    tracing and splits itself over the batch axes with ``jax.shard_map``.
    """
    jitted = jax.jit(fn, **jit_kwargs)

    @functools.wraps(fn)
    def call(*args):
        with jax.set_mesh(mesh):
            return jitted(*args)

    return call


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
    if batch_size % shards:
        raise ValueError(f"batch_size is {batch_size}, expected a multiple of data × fsdp = {shards}")


def maybe_initialize_distributed() -> None:
    """Joins a multi-host job when the launcher set the coordinator address (JAX's variables)."""
    import os

    if os.environ.get("JAX_COORDINATOR_ADDRESS") and not jax.distributed.is_initialized():
        jax.distributed.initialize()
