"""Selective scan (Mamba's S6): one entry point, several backends behind it.

The recurrence, per batch element b, channel d and state index n (Mamba §3, Algorithm 2)::

    Δ_t      = softplus(Δ_t + Δ_bias)           (bias and softplus optional)
    Ā_t      = exp(Δ_t A)                        zero-order hold of A
    B̄_t u_t  = Δ_t B_t u_t                       simplified (Euler) discretisation of B
    h_t      = Ā_t h_{t-1} + B̄_t u_t             h_{-1} = initial_state, or 0
    y_t      = C_t · h_t + D u_t                 contraction over n, skip connection
    y_t      = y_t · SiLU(z_t)                   optional gate

Layout is ``(batch, length, channels)``. ``B`` and ``C`` are shared by groups of channels:
``(b, l, g, n)`` with channel ``d`` reading group ``d // (channels / g)``; ``(b, l, n)`` is
the one-group case. All arithmetic of the scan runs in float32 whatever the input dtype.

Packed sequences (``segment_ids``), the convention of every op and kernel here:
    ``segment_ids: (b, l)`` int numbers the documents packed into each row (the JAX/Flax
    packing convention; padding is usually id 0, and is a segment like any other). A position
    t > 0 whose id differs from position t − 1's starts a new segment, and the state is reset
    there: Ā_t = 0, so h_t = B̄_t u_t. ``initial_state`` reaches only each row's first segment;
    the final state is each row's last segment's. The kernels take the same information as
    ``reset: (b, l)``, True where a segment starts (:func:`segment_starts`).

Backends::
    ``"sequential"``   ``lax.scan`` of :func:`selective_scan_step` over time: the ground truth.
    ``"associative"``  ``lax.associative_scan`` over the whole length: O(log L) depth,
                       materialises ``(b, l, d, n)``.
    ``"chunked"``      associative inside chunks of ``chunk_size``, the state carried across
                       chunks by ``lax.scan``; each chunk is rematerialised in the backward
                       pass, so memory is bounded by the chunk, not by L.
    ``"pallas"``       the fused kernel in ``ssmjax.kernels`` for the platform: Mosaic on a TPU,
                       Pallas' Triton lowering on a GPU (interpret mode elsewhere).
    ``"auto"``         the fastest correct backend for the default platform; on a GPU whose
                       jax lacks the Triton lowering, ``"chunked"`` (with one warning).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Callable, Literal, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ssmjax.ops.checks import check_floating, shape_error
from ssmjax.ops.recurrence import linear_recurrence

Backend = Literal["auto", "sequential", "associative", "chunked", "pallas"]
BACKENDS = ("auto", "sequential", "associative", "chunked", "pallas")
# Time steps per chunk of the "chunked" backend.
SCAN_CHUNK_SIZE = 128


def _as_grouped(name: str, x: jax.Array, batch: int, length: int, channels: int,
                state: int) -> jax.Array:
    """Returns ``x`` as ``(b, l, g, n)``, accepting ``(b, l, n)`` as one group."""
    received = x.shape
    if x.ndim == 3:
        x = x[:, :, None, :]
    if x.ndim != 4 or x.shape[:2] != (batch, length) or x.shape[3] != state:
        raise shape_error(name, received, f"({batch}, {length}, {state}) or ({batch}, {length}, g, {state})")
    groups = x.shape[2]
    if groups == 0 or channels % groups:
        raise ValueError(f"{name} has {groups} groups (shape {tuple(x.shape)}), which must divide "
                         f"the {channels} channels of u")
    return x


@dataclasses.dataclass(frozen=True)
class ScanInputs:
    """Validated inputs of a selective scan, with ``B`` and ``C`` always grouped."""

    u: jax.Array
    delta: jax.Array
    A: jax.Array
    B: jax.Array
    C: jax.Array
    D: jax.Array | None
    z: jax.Array | None
    delta_bias: jax.Array | None
    initial_state: jax.Array | None


def validate_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                         initial_state=None) -> ScanInputs:
    """Checks shapes and dtypes of the selective-scan contract; raises ``ValueError``.

    Expected: ``u, delta, z: (b, l, d)``; ``A: (d, n)``; ``B, C: (b, l, n)`` or
    ``(b, l, g, n)`` with ``d % g == 0``; ``D, delta_bias: (d,)``; ``initial_state: (b, d, n)``.
    """
    u, delta, A, B, C = (jnp.asarray(x) for x in (u, delta, A, B, C))
    if u.ndim != 3:
        raise shape_error("u", u.shape, "(batch, length, channels)")
    batch, length, channels = u.shape
    if length < 1:
        raise shape_error("u", u.shape, "(batch, length, channels) with length >= 1")
    if delta.shape != u.shape:
        raise shape_error("delta", delta.shape, f"{tuple(u.shape)} like u")
    if A.ndim != 2 or A.shape[0] != channels:
        raise shape_error("A", A.shape, f"({channels}, state_size)")
    state = A.shape[1]
    B = _as_grouped("B", B, batch, length, channels, state)
    C = _as_grouped("C", C, batch, length, channels, state)
    if B.shape != C.shape:
        raise ValueError(f"B has shape {tuple(B.shape)} but C has shape {tuple(C.shape)}: "
                         "they must have the same number of groups")
    if z is not None:
        z = jnp.asarray(z)
        if z.shape != u.shape:
            raise shape_error("z", z.shape, f"{tuple(u.shape)} like u")
    for name, vector in (("D", D), ("delta_bias", delta_bias)):
        if vector is not None and jnp.shape(vector) != (channels,):
            raise shape_error(name, jnp.shape(vector), f"({channels},)")
    if initial_state is not None and jnp.shape(initial_state) != (batch, channels, state):
        raise shape_error("initial_state", jnp.shape(initial_state), f"({batch}, {channels}, {state})")
    named = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                 initial_state=initial_state)
    for name, x in named.items():
        if x is not None:
            check_floating(name, jnp.asarray(x))
    return ScanInputs(u, delta, A, B, C,
                      None if D is None else jnp.asarray(D),
                      z,
                      None if delta_bias is None else jnp.asarray(delta_bias),
                      None if initial_state is None else jnp.asarray(initial_state))


def segment_starts(segment_ids: jax.Array, batch: int, length: int) -> jax.Array:
    """``reset: (b, l)`` bool, True at each t > 0 whose segment id differs from t − 1's.

    ``segment_ids: (b, l)`` of an integer dtype (the convention in this module's docstring).
    """
    segment_ids = jnp.asarray(segment_ids)
    if segment_ids.shape != (batch, length):
        raise shape_error("segment_ids", segment_ids.shape, f"({batch}, {length}), (batch, length)")
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(f"segment_ids has dtype {segment_ids.dtype}, expected an integer dtype")
    changed = segment_ids[:, 1:] != segment_ids[:, :-1]
    return jnp.concatenate([jnp.zeros((batch, 1), bool), changed], axis=1)


def check_reset(reset: jax.Array, batch: int) -> jax.Array:
    """A step's ``reset: (b,)`` (bool, or integer: nonzero = True) as bool."""
    reset = jnp.asarray(reset)
    if reset.shape != (batch,):
        raise shape_error("reset", reset.shape, f"({batch},), one flag per batch row")
    if not (reset.dtype == jnp.bool_ or jnp.issubdtype(reset.dtype, jnp.integer)):
        raise ValueError(f"reset has dtype {reset.dtype}, expected bool or an integer dtype")
    return reset != 0


def discretize_delta(delta: jax.Array, delta_bias: jax.Array | None, delta_softplus: bool) -> jax.Array:
    """Δ ← softplus(Δ + Δ_bias) in float32; ``delta: (..., d)``, ``delta_bias: (d,)``."""
    delta = delta.astype(jnp.float32)
    if delta_bias is not None:
        delta = delta + delta_bias.astype(jnp.float32)
    return jax.nn.softplus(delta) if delta_softplus else delta


def split_groups(x: jax.Array, groups: int) -> jax.Array:
    """``(..., d, *rest) → (..., g, d / g, *rest)`` along the channel axis.

    ``d`` is axis −1 of ``(..., d)`` arrays; for ``A (d, n)`` and states ``(..., d, n)`` pass
    them with ``rest`` = ``(n,)`` through :func:`split_state_groups`. Broadcasting a group's
    ``B``/``C`` row over its channels then costs no copy, unlike repeating it d / g times.
    """
    return x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)


def split_state_groups(x: jax.Array, groups: int) -> jax.Array:
    """``(..., d, n) → (..., g, d / g, n)``."""
    return x.reshape(*x.shape[:-2], groups, x.shape[-2] // groups, x.shape[-1])


def skip_and_gate(y: jax.Array, u: jax.Array, D: jax.Array | None, z: jax.Array | None) -> jax.Array:
    """``y + D u`` then ``· SiLU(z)``, in float32; all ``(..., d)``."""
    if D is not None:
        y = y + D.astype(jnp.float32) * u.astype(jnp.float32)
    if z is not None:
        y = y * jax.nn.silu(z.astype(jnp.float32))
    return y


def selective_scan_step(state: jax.Array, u_t: jax.Array, delta_t: jax.Array, A: jax.Array,
                        B_t: jax.Array, C_t: jax.Array, D: jax.Array | None = None,
                        z_t: jax.Array | None = None, delta_bias: jax.Array | None = None,
                        delta_softplus: bool = False,
                        reset: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """One time step of the selective SSM, for recurrent decoding.

    Args:
        state: ``(b, d, n)`` float32, h_{t-1}.
        u_t, delta_t, z_t: ``(b, d)``.
        A: ``(d, n)``.
        B_t, C_t: ``(b, n)`` or ``(b, g, n)``.
        D, delta_bias: ``(d,)``.
        reset: ``(b,)`` bool, True where a new segment starts at this step: Ā_t = 0, so
            ``state`` is forgotten (the packing convention of :mod:`ssmjax.ops.selective_scan`).

    Returns:
        ``(y_t, state)``: ``y_t: (b, d)`` in ``u_t.dtype`` and h_t ``(b, d, n)`` float32.
    """
    batch, channels = u_t.shape
    if B_t.ndim == 2:
        B_t, C_t = B_t[:, None, :], C_t[:, None, :]
    groups = B_t.shape[1]
    delta_t = split_groups(discretize_delta(delta_t, delta_bias, delta_softplus), groups)
    u_g = split_groups(u_t.astype(jnp.float32), groups)
    h = split_state_groups(state.astype(jnp.float32), groups)
    if reset is not None:
        h = jnp.where(check_reset(reset, batch)[:, None, None, None], 0.0, h)
    decay = jnp.exp(delta_t[..., None] * split_state_groups(A.astype(jnp.float32), groups))
    h = decay * h + (delta_t * u_g)[..., None] * B_t.astype(jnp.float32)[:, :, None, :]
    y_t = jnp.einsum("bgcn,bgn->bgc", h, C_t.astype(jnp.float32)).reshape(batch, channels)
    return (skip_and_gate(y_t, u_t, D, z_t).astype(u_t.dtype),
            h.reshape(batch, channels, A.shape[1]))


def _scan_sequential(x: ScanInputs, delta: jax.Array, state: jax.Array,
                     reset: jax.Array | None):
    """``lax.scan`` of the step over time; ``delta`` already discretised."""

    def step(h, inputs):
        u_t, delta_t, B_t, C_t, *reset_t = inputs
        y_t, h = selective_scan_step(h, u_t, delta_t, x.A, B_t, C_t,
                                     reset=reset_t[0] if reset_t else None)
        return h, y_t

    sequences = (x.u.astype(jnp.float32), delta, x.B, x.C) + (() if reset is None else (reset,))
    state, y = jax.lax.scan(step, state, tuple(jnp.swapaxes(v, 0, 1) for v in sequences))
    return jnp.swapaxes(y, 0, 1), state


def _scan_associative_block(u, delta, A, B, C, state, reset):
    """Associative scan over axis 1 of one block; returns ``(y (b, t, d), h_last (b, d, n))``.

    ``u, delta: (b, t, d)`` float32, ``B, C: (b, t, g, n)``, ``state: (b, d, n)``,
    ``reset: (b, t)`` bool or None.
    """
    batch, length, channels = u.shape
    groups = B.shape[2]
    delta = split_groups(delta, groups)
    decay = jnp.exp(delta[..., None] * split_state_groups(A.astype(jnp.float32), groups))
    drive = (delta * split_groups(u, groups))[..., None] * B.astype(jnp.float32)[:, :, :, None, :]
    h = linear_recurrence(decay, drive, split_state_groups(state, groups), reset=reset)
    y = jnp.einsum("btgcn,btgn->btgc", h, C.astype(jnp.float32)).reshape(batch, length, channels)
    return y, h[:, -1].reshape(batch, channels, A.shape[1])


def _scan_associative(x: ScanInputs, delta: jax.Array, state: jax.Array,
                      reset: jax.Array | None):
    return _scan_associative_block(x.u.astype(jnp.float32), delta, x.A, x.B, x.C, state, reset)


def _scan_chunked(x: ScanInputs, delta: jax.Array, state: jax.Array, reset: jax.Array | None,
                  chunk_size: int):
    batch, length, channels = x.u.shape
    chunk_size = min(chunk_size, length)
    num_chunks = math.ceil(length / chunk_size)
    pad = num_chunks * chunk_size - length

    def to_chunks(v):
        # Padding with Δ = 0 (and no reset) makes the padded steps the identity map (Ā = 1,
        # B̄u = 0), so the carried state, and with it the final state, is exact.
        v = jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2))
        v = v.reshape(batch, num_chunks, chunk_size, *v.shape[2:])
        return jnp.swapaxes(v, 0, 1)

    @jax.checkpoint
    def scan_chunk(h, chunk):
        # A reset at a chunk's first step drops the carried state there (Ā = 0 multiplies it).
        u, d, B, C, *reset_chunk = chunk
        y, h = _scan_associative_block(u, d, x.A, B, C, h, reset_chunk[0] if reset_chunk else None)
        return h, y

    sequences = (x.u.astype(jnp.float32), delta, x.B, x.C) + (() if reset is None else (reset,))
    state, y = jax.lax.scan(scan_chunk, state, tuple(to_chunks(v) for v in sequences))
    y = jnp.swapaxes(y, 0, 1).reshape(batch, num_chunks * chunk_size, channels)
    return y[:, :length], state


def _mesh_batch_axes(batch_axes: tuple[str, ...], batch: int) -> tuple[str, ...]:
    """Those of ``batch_axes`` that split the batch on the mesh set by ``jax.set_mesh`` while
    tracing; none without a mesh."""
    if not batch_axes:
        return ()
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    unknown = [a for a in batch_axes if a not in mesh.axis_names]
    if unknown:
        raise ValueError(f"batch_axes is {batch_axes}, expected axes of the mesh "
                         f"{tuple(mesh.axis_names)}: it has no axis {unknown[0]!r}")
    axes = tuple(a for a in batch_axes if mesh.shape[a] > 1)
    shards = math.prod(mesh.shape[a] for a in axes)
    if batch % shards:
        raise ValueError(f"u has batch {batch}, expected a multiple of the mesh's "
                         f"{' × '.join(axes)} = {shards} to split the Pallas scan over it")
    return axes


def _pallas_kernel() -> Callable[..., tuple[jax.Array, jax.Array]]:
    """The fused kernel for the default platform: Mosaic on a TPU, Triton elsewhere.

    Off a GPU and a TPU, the GPU kernel runs in Pallas interpret mode (the CPU tests).
    """
    if jax.default_backend() == "tpu":
        from ssmjax.kernels import selective_scan_tpu

        return selective_scan_tpu.selective_scan
    from ssmjax.kernels import selective_scan_gpu
    from ssmjax.kernels.common import interpret_by_default

    return functools.partial(selective_scan_gpu.selective_scan,
                             interpret=interpret_by_default(None))


def _scan_pallas(x: ScanInputs, reset: jax.Array | None, delta_softplus: bool,
                 batch_axes: tuple[str, ...]) -> tuple[jax.Array, jax.Array]:
    """The fused kernel; under a mesh, once per shard of ``batch_axes`` (``jax.shard_map``).

    A Pallas call is opaque to XLA's partitioner, which would gather the whole batch onto every
    device; splitting it over the mesh's batch axes keeps data parallelism.
    """
    kernel = _pallas_kernel()

    def scan(u, delta, A, B, C, D, z, delta_bias, initial_state, reset):
        return kernel(u, delta, A, B, C, D, z, delta_bias, initial_state, reset=reset,
                      delta_softplus=delta_softplus)

    args = (x.u, x.delta, x.A.astype(jnp.float32), x.B, x.C, x.D, x.z, x.delta_bias,
            None if x.initial_state is None else x.initial_state.astype(jnp.float32), reset)
    axes = _mesh_batch_axes(batch_axes, x.u.shape[0])
    if not axes:
        return scan(*args)
    batched, shared = P(axes), P()
    in_specs = (batched, batched, shared, batched, batched, shared, batched, shared, batched,
                batched)
    in_specs = tuple(None if a is None else spec for a, spec in zip(args, in_specs))
    return jax.shard_map(scan, mesh=jax.sharding.get_abstract_mesh(), in_specs=in_specs,
                         out_specs=(batched, batched), check_vma=False)(*args)


def _require_pallas() -> None:
    if jax.default_backend() == "tpu":  # the TPU kernel lowers through Mosaic, not Triton
        return
    from ssmjax.kernels.common import require_triton_lowering

    require_triton_lowering("backend='pallas'",
                            "backend='chunked' needs no kernel ('auto' falls back to it)")


@functools.cache
def _warn_auto_without_triton() -> None:
    """Once per process: a model traces the scan once per layer."""
    from ssmjax.kernels.common import TRITON_LOWERING

    warnings.warn(f"backend='auto' on the GPU uses the chunked XLA scan: jax {jax.__version__} has "
                  f"no Pallas Triton lowering ({TRITON_LOWERING}) for ssmjax's fused kernel",
                  RuntimeWarning, stacklevel=4)


def default_backend(platform: str | None = None) -> str:
    """The backend ``"auto"`` resolves to on ``platform`` (jax's default platform if None)."""
    platform = jax.default_backend() if platform is None else platform
    if platform == "gpu":
        from ssmjax.kernels import common

        if common.triton_lowering() is not None:
            return "pallas"
        _warn_auto_without_triton()
        return "chunked"
    # On the CPU a sequential scan beats the log-depth ones (measured in
    # experiments/benchmarks/scan_cpu.py); a TPU has its fused kernel (unmeasured:
    # kernels/NOTES.md); elsewhere the chunked scan bounds memory.
    return {"cpu": "sequential", "tpu": "pallas"}.get(platform, "chunked")


def _check_batch_axes(batch_axes: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(batch_axes, (tuple, list)) or not all(isinstance(a, str) for a in batch_axes):
        raise ValueError(f"batch_axes is {batch_axes!r}, expected a tuple of mesh axis names "
                         "such as ('data', 'fsdp')")
    return tuple(batch_axes)


def selective_scan(u: jax.Array, delta: jax.Array, A: jax.Array, B: jax.Array, C: jax.Array,
                   D: jax.Array | None = None, z: jax.Array | None = None,
                   delta_bias: jax.Array | None = None, delta_softplus: bool = False,
                   initial_state: jax.Array | None = None, return_final_state: bool = False, *,
                   segment_ids: jax.Array | None = None, backend: Backend = "auto",
                   chunk_size: int = SCAN_CHUNK_SIZE, batch_axes: Sequence[str] = ()):
    """Selective scan (S6) with the semantics of mamba-ssm's ``selective_scan_ref``.

    Args:
        u: ``(b, l, d)`` input.
        delta: ``(b, l, d)`` time steps Δ (before bias and softplus).
        A: ``(d, n)`` state matrix (diagonal per channel; negative real for stability).
        B, C: ``(b, l, n)`` or grouped ``(b, l, g, n)`` with ``d % g == 0``.
        D: ``(d,)`` skip connection.
        z: ``(b, l, d)`` gate, applied as ``y · SiLU(z)``.
        delta_bias: ``(d,)`` added to Δ before the softplus.
        delta_softplus: apply softplus to Δ.
        initial_state: ``(b, d, n)`` h_{-1} of each row's first segment.
        return_final_state: also return h_{L-1}, the state after each row's last segment.
        segment_ids: ``(b, l)`` int, documents packed into each row; the state resets where
            the id changes (the convention in this module's docstring).
        backend: ``"sequential"``, ``"associative"``, ``"chunked"``, ``"pallas"`` or ``"auto"``.
        chunk_size: time steps per chunk of the ``"chunked"`` backend.
        batch_axes: the mesh axes over which the batch is split. Under a mesh
            (``jax.set_mesh``) the ``"pallas"`` kernel then runs once per batch shard; the XLA
            backends are partitioned by XLA and ignore it. Empty: no splitting.

    Returns:
        ``y: (b, l, d)`` in ``u.dtype``, and with ``return_final_state`` also
        ``final_state: (b, d, n)`` float32. A cotangent on either reaches every input: a final
        state carried into the next chunk of a long sequence passes its gradient back.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend is {backend!r}, expected one of {BACKENDS}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size is {chunk_size}, expected a positive integer")
    batch_axes = _check_batch_axes(batch_axes)
    x = validate_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    batch, length, channels = x.u.shape
    reset = None if segment_ids is None else segment_starts(segment_ids, batch, length)
    if backend == "auto":
        backend = default_backend()
    if backend == "pallas":
        _require_pallas()
        y, state = _scan_pallas(x, reset, delta_softplus, batch_axes)
        return (y, state) if return_final_state else y

    state = (jnp.zeros((batch, channels, x.A.shape[1]), jnp.float32) if x.initial_state is None
             else x.initial_state.astype(jnp.float32))
    delta = discretize_delta(x.delta, x.delta_bias, delta_softplus)
    if backend == "sequential":
        y, state = _scan_sequential(x, delta, state, reset)
    elif backend == "associative":
        y, state = _scan_associative(x, delta, state, reset)
    else:
        y, state = _scan_chunked(x, delta, state, reset, chunk_size)
    y = skip_and_gate(y, x.u, x.D, x.z).astype(x.u.dtype)
    return (y, state) if return_final_state else y
