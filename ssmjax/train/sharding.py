"""Device mesh and shardings: parameters by their logical axes, batches over the batch axes.

One code path from one CPU to a multi-GPU host to a TPU pod: the mesh has the axes
``("data", "fsdp", "model")``, and a table of logical-axis rules (``train.logical_axis_rules``,
MaxText's ``logical_axis_rules``) maps the names that parameters give their axes (see
``ssmjax.nn.partitioning``) and the ``"batch"`` axis of the data onto mesh axes:

    ("batch", ("data", "fsdp"))   batches split over data × fsdp
    ("embed", "fsdp")             FSDP shards the model width
    ("inner", "model"), ("vocab", "model")   the optional model axis: inner width, vocabulary
    ("state", None)               replicated

A rule maps a logical name to one mesh axis, a tuple of mesh axes (sharded over their
product), or ``None`` (replicated). An array axis whose size the mesh axes do not divide stays
replicated, so small models run on any mesh; :func:`replicated_axes` names every such
parameter axis, and the training loop logs one line for each.
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
BATCH = "batch"
MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]
DEFAULT_RULES: Rules = (
    (BATCH, ("data", "fsdp")),
    ("embed", "fsdp"),
    ("inner", "model"),
    ("vocab", "model"),
    ("state", None),
)


def check_rules(rules: Sequence[Sequence[Any]]) -> Rules:
    """``rules`` as a tuple of ``(logical name, mesh axes)`` pairs (lists, as JSON holds them,
    become tuples); raises unless every entry is a pair naming axes of :data:`MESH_AXES` and
    every logical name appears once."""
    checked = []
    for entry in rules:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(f"logical_axis_rules entry {entry!r}: expected a pair "
                             "(logical name, mesh axis | tuple of mesh axes | None)")
        name, target = entry
        target = tuple(target) if isinstance(target, (tuple, list)) else target
        for axis in (target if isinstance(target, tuple) else (target,)):
            if axis is not None and axis not in MESH_AXES:
                raise ValueError(f"logical_axis_rules entry {entry!r}: mesh axis {axis!r} is not "
                                 f"one of {MESH_AXES}")
        checked.append((name, target))
    names = [name for name, _ in checked]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"logical_axis_rules names {repeated} more than once, expected one rule "
                         "per logical name")
    return tuple(checked)


def _as_axes(target: MeshAxes) -> tuple[str, ...]:
    if target is None:
        return ()
    return target if isinstance(target, tuple) else (target,)


def batch_mesh_axes(rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES) -> tuple[str, ...]:
    """The mesh axes that split the batch: the ``"batch"`` rule's (``()``: no rule, replicated).

    What the data is sharded over, and what a scan that splits itself over the batch
    (the Pallas kernel under ``shard_map``) must be told.
    """
    return _as_axes(dict(rules).get(BATCH))


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


def _assign_axes(shape: tuple[int, ...], logical_axes: tuple[str | None, ...] | None, mesh: Any,
                 rules: Sequence[tuple[str, MeshAxes]]) -> tuple[PartitionSpec, list[str]]:
    """The ``PartitionSpec`` of an array, and why each axis its rule would shard stays
    replicated (one sentence per such axis)."""
    if not logical_axes:
        return PartitionSpec(), []
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {logical_axes} do not match the parameter shape {shape}")
    table = dict(rules)
    used: set[str] = set()
    spec, fallbacks = [], []
    for index, (name, size) in enumerate(zip(logical_axes, shape)):
        axes = _as_axes(table.get(name))
        shards = math.prod(mesh.shape[a] for a in axes)
        if not axes:
            spec.append(None)
        elif used & set(axes):  # a mesh axis shards one array axis at most
            spec.append(None)
            if shards > 1:
                fallbacks.append(f"axis {index} ({name!r}, size {size}) is replicated: mesh axes "
                                 f"{' × '.join(axes)} already shard another of its axes")
        elif size % shards:
            spec.append(None)
            fallbacks.append(f"axis {index} ({name!r}, size {size}) is replicated: mesh axes "
                             f"{' × '.join(axes)} = {shards} do not divide it")
        else:
            spec.append(axes[0] if len(axes) == 1 else axes)
            used.update(axes)
    return PartitionSpec(*spec), fallbacks


def partition_spec(shape: tuple[int, ...], logical_axes: tuple[str | None, ...] | None,
                   mesh: Mesh, rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES) -> PartitionSpec:
    """The ``PartitionSpec`` of an array of ``shape`` whose axes have ``logical_axes``."""
    return _assign_axes(shape, logical_axes, mesh, rules)[0]


def _logical_axes(variable: Any) -> tuple[str | None, ...] | None:
    return variable.get_metadata().get(LOGICAL_AXES) if isinstance(variable, nnx.Variable) else None


def state_shardings(state: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES) -> Any:
    """Shardings for an ``nnx.State`` (params, optimizer state; concrete or abstract) from its
    variables' metadata."""

    def sharding(variable):
        value = variable.get_value() if isinstance(variable, nnx.Variable) else variable
        if not hasattr(value, "shape"):  # no array: optax's MaskedNode of a parameter outside a group
            return variable
        spec = partition_spec(value.shape, _logical_axes(variable), mesh, rules)
        return variable.replace(NamedSharding(mesh, spec)) if isinstance(variable, nnx.Variable) \
            else NamedSharding(mesh, spec)

    return jax.tree.map(sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def replicated_axes(params: Any, mesh: Any,
                    rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES) -> list[str]:
    """One line for each parameter axis that its rule would shard but that stays replicated
    (the mesh axes do not divide it, or already shard another axis of it), naming the
    parameter by its path. ``params``: an ``nnx.State`` of parameters, concrete or abstract;
    ``mesh``: a ``Mesh`` or an ``AbstractMesh``."""
    lines = []
    for path, variable in nnx.to_flat_state(params):
        value = variable.get_value() if isinstance(variable, nnx.Variable) else variable
        _, fallbacks = _assign_axes(value.shape, _logical_axes(variable), mesh, rules)
        name = "/".join(str(part) for part in path)
        lines += [f"{name}: {reason}" for reason in fallbacks]
    return lines


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES,
                   *, stacked: bool = False) -> NamedSharding:
    """The leading (batch) axis over :func:`batch_mesh_axes`, the rest replicated; with
    ``stacked``, arrays ``(steps, batch, ...)`` of several steps' batches."""
    axes = batch_mesh_axes(rules) or None
    return NamedSharding(mesh, PartitionSpec(None, axes) if stacked else PartitionSpec(axes))


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding,
                 batch_axis: int = 0) -> dict[str, jax.Array]:
    """This process's rows of a batch (numpy, leading with the rows it reads) as global arrays
    on the mesh with ``sharding``; with one process, its rows are the whole batch."""
    processes = jax.process_count()

    def place(array):
        array = np.asarray(array)
        shape = list(array.shape)
        shape[batch_axis] *= processes
        return jax.make_array_from_process_local_data(sharding, array, tuple(shape))

    return {name: place(array) for name, array in local.items()}


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


def check_batch_divisible(batch_size: int, mesh: Mesh,
                          rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES) -> None:
    """Raises unless ``batch_size`` splits evenly over the mesh's batch axes."""
    axes = batch_mesh_axes(rules)
    shards = math.prod(mesh.shape[a] for a in axes)
    if batch_size % shards:
        raise ValueError(f"batch_size is {batch_size}, expected a multiple of "
                         f"{' × '.join(axes)} = {shards}")


def maybe_initialize_distributed() -> None:
    """Joins a multi-host job when the launcher set the coordinator address (JAX's variables)."""
    import os

    if os.environ.get("JAX_COORDINATOR_ADDRESS") and not jax.distributed.is_initialized():
        jax.distributed.initialize()
