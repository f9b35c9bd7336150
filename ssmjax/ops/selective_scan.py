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

Backends:
    ``"sequential"``   ``lax.scan`` of :func:`selective_scan_step` over time: the ground truth.
    ``"associative"``  ``lax.associative_scan`` over the whole length: O(log L) depth,
                       materialises ``(b, l, d, n)``.
    ``"chunked"``      associative inside chunks of ``chunk_size``, the state carried across
                       chunks by ``lax.scan``; each chunk is rematerialised in the backward
                       pass, so memory is bounded by the chunk, not by L.
    ``"pallas"``       the fused kernel in ``ssmjax.kernels`` for the platform (GPU or TPU).
    ``"auto"``         the fastest correct backend for the default platform.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Literal

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ssmjax.ops.recurrence import linear_recurrence

Backend = Literal["auto", "sequential", "associative", "chunked", "pallas"]
BACKENDS = ("auto", "sequential", "associative", "chunked", "pallas")
DEFAULT_CHUNK_SIZE = 128


def _shape_error(name: str, got: tuple[int, ...], expected: str) -> ValueError:
    return ValueError(f"{name} has shape {tuple(got)}, expected {expected}")


def _check_floating(name: str, x: jax.Array) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} has dtype {x.dtype}, expected a floating dtype (float32, bfloat16, float16)")


def _as_grouped(name: str, x: jax.Array, batch: int, length: int, channels: int,
                state: int) -> jax.Array:
    """Returns ``x`` as ``(b, l, g, n)``, accepting ``(b, l, n)`` as one group."""
    received = x.shape
    if x.ndim == 3:
        x = x[:, :, None, :]
    if x.ndim != 4 or x.shape[:2] != (batch, length) or x.shape[3] != state:
        raise _shape_error(name, received, f"({batch}, {length}, {state}) or ({batch}, {length}, g, {state})")
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
        raise _shape_error("u", u.shape, "(batch, length, channels)")
    batch, length, channels = u.shape
    if length < 1:
        raise _shape_error("u", u.shape, "(batch, length, channels) with length >= 1")
    if delta.shape != u.shape:
        raise _shape_error("delta", delta.shape, f"{tuple(u.shape)} like u")
    if A.ndim != 2 or A.shape[0] != channels:
        raise _shape_error("A", A.shape, f"({channels}, state_size)")
    state = A.shape[1]
    B = _as_grouped("B", B, batch, length, channels, state)
    C = _as_grouped("C", C, batch, length, channels, state)
    if B.shape != C.shape:
        raise ValueError(f"B has shape {tuple(B.shape)} but C has shape {tuple(C.shape)}: "
                         "they must have the same number of groups")
    if z is not None:
        z = jnp.asarray(z)
        if z.shape != u.shape:
            raise _shape_error("z", z.shape, f"{tuple(u.shape)} like u")
    for name, vector in (("D", D), ("delta_bias", delta_bias)):
        if vector is not None and jnp.shape(vector) != (channels,):
            raise _shape_error(name, jnp.shape(vector), f"({channels},)")
    if initial_state is not None and jnp.shape(initial_state) != (batch, channels, state):
        raise _shape_error("initial_state", jnp.shape(initial_state), f"({batch}, {channels}, {state})")
    named = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                 initial_state=initial_state)
    for name, x in named.items():
        if x is not None:
            _check_floating(name, jnp.asarray(x))
    return ScanInputs(u, delta, A, B, C,
                      None if D is None else jnp.asarray(D),
                      z,
                      None if delta_bias is None else jnp.asarray(delta_bias),
                      None if initial_state is None else jnp.asarray(initial_state))


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
                        delta_softplus: bool = False) -> tuple[jax.Array, jax.Array]:
    """One time step of the selective SSM, for recurrent decoding.

    Args:
        state: ``(b, d, n)`` float32, h_{t-1}.
        u_t, delta_t, z_t: ``(b, d)``.
        A: ``(d, n)``.
        B_t, C_t: ``(b, n)`` or ``(b, g, n)``.
        D, delta_bias: ``(d,)``.

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
    decay = jnp.exp(delta_t[..., None] * split_state_groups(A.astype(jnp.float32), groups))
    h = decay * h + (delta_t * u_g)[..., None] * B_t.astype(jnp.float32)[:, :, None, :]
    y_t = jnp.einsum("bgcn,bgn->bgc", h, C_t.astype(jnp.float32)).reshape(batch, channels)
    return (skip_and_gate(y_t, u_t, D, z_t).astype(u_t.dtype),
            h.reshape(batch, channels, A.shape[1]))


def _scan_sequential(x: ScanInputs, delta: jax.Array, state: jax.Array):
    """``lax.scan`` of the step over time; ``delta`` already discretised."""

    def step(h, inputs):
        u_t, delta_t, B_t, C_t = inputs
        y_t, h = selective_scan_step(h, u_t, delta_t, x.A, B_t, C_t)
        return h, y_t

    time_major = (jnp.swapaxes(v, 0, 1) for v in (x.u.astype(jnp.float32), delta, x.B, x.C))
    state, y = jax.lax.scan(step, state, tuple(time_major))
    return jnp.swapaxes(y, 0, 1), state


def _scan_associative_block(u, delta, A, B, C, state):
    """Associative scan over axis 1 of one block; returns ``(y (b, t, d), h_last (b, d, n))``.

    ``u, delta: (b, t, d)`` float32, ``B, C: (b, t, g, n)``, ``state: (b, d, n)``.
    """
    batch, length, channels = u.shape
    groups = B.shape[2]
    delta = split_groups(delta, groups)
    decay = jnp.exp(delta[..., None] * split_state_groups(A.astype(jnp.float32), groups))
    drive = (delta * split_groups(u, groups))[..., None] * B.astype(jnp.float32)[:, :, :, None, :]
    h = linear_recurrence(decay, drive, split_state_groups(state, groups))
    y = jnp.einsum("btgcn,btgn->btgc", h, C.astype(jnp.float32)).reshape(batch, length, channels)
    return y, h[:, -1].reshape(batch, channels, A.shape[1])


def _scan_associative(x: ScanInputs, delta: jax.Array, state: jax.Array):
    return _scan_associative_block(x.u.astype(jnp.float32), delta, x.A, x.B, x.C, state)


def _scan_chunked(x: ScanInputs, delta: jax.Array, state: jax.Array, chunk_size: int):
    batch, length, channels = x.u.shape
    chunk_size = min(chunk_size, length)
    num_chunks = math.ceil(length / chunk_size)
    pad = num_chunks * chunk_size - length

    def to_chunks(v):
        # Padding with Δ = 0 makes the padded steps the identity map (Ā = 1, B̄u = 0), so the
        # carried state, and with it the final state, is exact.
        v = jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2))
        v = v.reshape(batch, num_chunks, chunk_size, *v.shape[2:])
        return jnp.swapaxes(v, 0, 1)

    @jax.checkpoint
    def scan_chunk(h, chunk):
        u, d, B, C = chunk
        y, h = _scan_associative_block(u, d, x.A, B, C, h)
        return h, y

    chunks = tuple(to_chunks(v) for v in (x.u.astype(jnp.float32), delta, x.B, x.C))
    state, y = jax.lax.scan(scan_chunk, state, chunks)
    y = jnp.swapaxes(y, 0, 1).reshape(batch, num_chunks * chunk_size, channels)
    return y[:, :length], state


# Mesh axes that split the batch in sharded code (ssmjax.train.sharding builds meshes with them).
BATCH_MESH_AXES = ("data", "fsdp")


def _batch_mesh_axes(batch: int) -> tuple[str, ...]:
    """The batch-splitting axes of the mesh set by ``jax.set_mesh`` while tracing, if any."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    axes = tuple(a for a in BATCH_MESH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
    shards = math.prod(mesh.shape[a] for a in axes)
    if batch % shards:
        raise ValueError(f"u has batch {batch}, expected a multiple of the mesh's "
                         f"{' × '.join(axes)} = {shards} to split the Pallas scan over it")
    return axes


def _pallas_kernel() -> Callable[..., tuple[jax.Array, jax.Array]]:
    """The fused kernel for the default platform: Mosaic on a TPU, Triton elsewhere.

    Off a GPU and a TPU, the GPU kernel runs in Pallas interpret mode (the CPU tests).
    """
    platform = jax.default_backend()
    if platform == "tpu":
        from ssmjax.kernels import selective_scan_tpu

        return selective_scan_tpu.selective_scan
    from ssmjax.kernels import selective_scan_gpu

    return functools.partial(selective_scan_gpu.selective_scan, interpret=platform != "gpu")


def _scan_pallas(x: ScanInputs, delta_softplus: bool) -> tuple[jax.Array, jax.Array]:
    """The fused kernel; under a mesh, once per batch shard (``jax.shard_map``).

    A Pallas call is opaque to XLA's partitioner, which would gather the whole batch onto every
    device; splitting it over the mesh's batch axes keeps data parallelism.
    """
    kernel = _pallas_kernel()

    def scan(u, delta, A, B, C, D, z, delta_bias, initial_state):
        return kernel(u, delta, A, B, C, D, z, delta_bias, initial_state,
                      delta_softplus=delta_softplus)

    args = (x.u, x.delta, x.A.astype(jnp.float32), x.B, x.C, x.D, x.z, x.delta_bias,
            None if x.initial_state is None else x.initial_state.astype(jnp.float32))
    axes = _batch_mesh_axes(x.u.shape[0])
    if not axes:
        return scan(*args)
    batched, shared = P(axes), P()
    in_specs = (batched, batched, shared, batched, batched, shared, batched, shared, batched)
    in_specs = tuple(None if a is None else spec for a, spec in zip(args, in_specs))
    return jax.shard_map(scan, mesh=jax.sharding.get_abstract_mesh(), in_specs=in_specs,
                         out_specs=(batched, batched), check_vma=False)(*args)


def default_backend() -> str:
    """The backend ``"auto"`` resolves to on the default platform."""
    # On the CPU a sequential scan beats the log-depth ones (measured in
    # experiments/benchmarks/scan_cpu.py); GPUs and TPUs have a fused kernel (the TPU one is
    # unmeasured: kernels/NOTES.md); elsewhere the chunked scan bounds memory.
    platform = jax.default_backend()
    return {"gpu": "pallas", "tpu": "pallas", "cpu": "sequential"}.get(platform, "chunked")


def selective_scan(u: jax.Array, delta: jax.Array, A: jax.Array, B: jax.Array, C: jax.Array,
                   D: jax.Array | None = None, z: jax.Array | None = None,
                   delta_bias: jax.Array | None = None, delta_softplus: bool = False,
                   initial_state: jax.Array | None = None, return_final_state: bool = False, *,
                   backend: Backend = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE):
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
        initial_state: ``(b, d, n)`` h_{-1}.
        return_final_state: also return h_{L-1}.
        backend: ``"sequential"``, ``"associative"``, ``"chunked"``, ``"pallas"`` or ``"auto"``.
        chunk_size: time steps per chunk of the ``"chunked"`` backend.

    Returns:
        ``y: (b, l, d)`` in ``u.dtype``, and with ``return_final_state`` also
        ``final_state: (b, d, n)`` float32.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend is {backend!r}, expected one of {BACKENDS}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size is {chunk_size}, expected a positive integer")
    x = validate_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if backend == "auto":
        backend = default_backend()
    if backend == "pallas":
        y, state = _scan_pallas(x, delta_softplus)
        return (y, state) if return_final_state else y

    batch, _, channels = x.u.shape
    state = (jnp.zeros((batch, channels, x.A.shape[1]), jnp.float32) if x.initial_state is None
             else x.initial_state.astype(jnp.float32))
    delta = discretize_delta(x.delta, x.delta_bias, delta_softplus)
    if backend == "sequential":
        y, state = _scan_sequential(x, delta, state)
    elif backend == "associative":
        y, state = _scan_associative(x, delta, state)
    else:
        y, state = _scan_chunked(x, delta, state, chunk_size)
    y = skip_and_gate(y, x.u, x.D, x.z).astype(x.u.dtype)
    return (y, state) if return_final_state else y
