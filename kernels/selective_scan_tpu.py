"""Fused selective scan (Mamba's S6, §3.3 and Appendix D) as Pallas TPU (Mosaic) kernels.

Semantics are those of :mod:`kernels.selective_scan_gpu` (mamba-ssm's ``selective_scan_ref``
in the (batch, length, channels) layout), with optional segment resets::

    delta = softplus(delta + delta_bias)                 (bias and softplus optional)
    h_t   = keep_t * exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t   h_{-1} = initial_state
    y_t   = (sum_n C_t[n] * h_t[:, n] + D * u_t) * silu(z_t)      (D, z optional)

where ``keep_t = 0`` where ``reset`` marks the first position of a segment and 1 elsewhere.

Design (VMEM budget and what is unmeasured: ``kernels/NOTES.md``):

* Grid ``(batch, channel tiles, time blocks)``, marked ("parallel", "parallel", "arbitrary"):
  one program owns ``block_d`` channels of one batch row for ``block_l`` time steps. The
  (d_state, block_d) float32 state lives in VMEM scratch and is carried from one time block
  to the next, so the sequence axis must run in order; batch rows and channel tiles are
  independent (megacore chips split them over their cores). Inputs stream through
  ``BlockSpec``s, double-buffered by Pallas; no (b, l, d, n) tensor touches HBM.
* Layout. The last two dims of a block map to the TPU's (sublanes, lanes) = (8, 128) tiles.
  Channels go on lanes everywhere: they are what the recurrence is parallel over, and
  ``block_d`` is a multiple of 128, so every vector op is lane-dense. Time goes on sublanes
  in the activation blocks ``(block_l, block_d)``, so step t is one dynamic sublane row, a
  cheap load; the state is ``(d_state, block_d)``, states on sublanes (n = 16 fills two
  sublane tiles). A step then needs ``delta_t`` as a row broadcast over sublanes (free) and
  ``B_t``, ``C_t`` as columns broadcast over lanes: they arrive as (block_l, n) blocks and
  row t is turned into a column per step; that relayout does not depend on the state, so it
  is off the recurrence's critical path. The contraction with C is a sum over sublanes.
* Everything that is per (t, channel) rather than per (t, channel, state) is computed once
  per time block on whole (block_l, block_d) tiles, outside the sequential loop: softplus and
  Δ bias, Δ·u, the skip D·u, the SiLU gate and, in the backward pass, all the per-channel
  gradient algebra. The loop only runs the state recurrence.
* Backward: the training forward also writes the state before every time block, a
  (b, l / block_l, n, d) float32 checkpoint. The backward grid walks the time blocks in
  reverse; each program reloads its block's checkpoint, recomputes the block's states into a
  (block_l + 1, n, block_d) VMEM scratch, then runs the adjoint recurrence
  ``lam_t = C_t g_t + keep_{t+1} exp(delta_{t+1} A) lam_{t+1}`` back through it, carrying
  ``lam`` across time blocks in VMEM scratch as the forward carries ``h``.
* Gradients of B and C sum over the channels of a group: each program writes its channel
  tile's partial sums, a (b, d / block_d, l, n) float32 array per gradient, and the wrapper
  adds the tiles of each group (an XLA reduction). dA, dD and dΔ-bias accumulate in the
  program's output block across the time axis and are summed over the batch by the wrapper.
* Any L: a last, partial time block is masked (Δ = 0, u = B = C = dy = 0 there make a step the
  identity on state and adjoint). Channel groups narrower than a lane tile are padded to 128
  channels with inert entries (u = Δ = A = 0).

All arithmetic is float32 whatever the input dtype. ``interpret=True`` runs the kernels in
Pallas' TPU interpret mode (``pltpu.InterpretParams``), which simulates VMEM, the block
pipeline and out-of-bounds reads of partial blocks on any backend.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

__all__ = ["selective_scan", "default_block_sizes", "vmem_bytes"]

LANES = 128
SUBLANES = 8
# softplus(x) == x to float32 precision beyond this (mamba-ssm uses the same threshold).
_SOFTPLUS_LINEAR_ABOVE = 20.0


def default_block_sizes() -> dict[str, int]:
    """Default block sizes: 256 channels (two lane tiles) × 128 time steps, 8-step unroll.

    Chosen for the (8, 128) tiling and VMEM (under 6 MiB for the backward at d_state 16, so
    they fit TPU v4's 16 MiB), untuned: the kernel has not run on TPU hardware.
    """
    return dict(block_d=256, block_l=128, unroll=8)


# ---------------------------------------------------------------------------------------------
# Static configuration shared by the kernels and their custom_vjp
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Config:
    length: int
    d_state: int
    n_groups: int
    block_d: int  # channels per program: a multiple of 128, or all channels of a 1-group scan
    block_l: int  # time steps per program: a multiple of the sublane tile, or the whole length
    tiles_per_group: int
    unroll: int
    has_d: bool
    has_z: bool
    has_bias: bool
    softplus: bool
    has_initial_state: bool
    has_reset: bool
    vmem_limit_bytes: int
    interpret: bool

    @property
    def n_blocks(self) -> int:
        return -(-self.length // self.block_l)

    @property
    def masked(self) -> bool:
        return self.length % self.block_l != 0


def _tile_bytes(shape: tuple[int, ...], itemsize: int) -> int:
    """VMEM bytes of a block: its last two dims padded to (8 · 4 / itemsize, 128) tiles."""
    *lead, rows, cols = (1,) * max(0, 2 - len(shape)) + tuple(shape)
    packing = max(1, 4 // itemsize)
    rows = -(-rows // (SUBLANES * packing)) * SUBLANES * packing
    cols = -(-cols // LANES) * LANES
    return math.prod(lead) * rows * cols * itemsize


def vmem_bytes(block_d: int, block_l: int, d_state: int, itemsize: int = 2, *,
               backward: bool) -> int:
    """VMEM one program needs: double-buffered blocks plus scratch, with tile padding.

    Args:
      block_d, block_l: channel tile and time block.
      d_state: n.
      itemsize: bytes per element of the activations (u, Δ, z, B, C, y and their gradients).
      backward: the backward kernel's budget instead of the forward's (with checkpoints).
    """
    T, Dt, n, f32 = block_l, block_d, d_state, 4
    rows, bc_rows = _tile_bytes((T, Dt), itemsize), _tile_bytes((T, n), itemsize)
    state, vec = _tile_bytes((n, Dt), f32), _tile_bytes((1, Dt), f32)
    keep = _tile_bytes((T, 1), f32)
    if not backward:
        # u, Δ, z, y; B, C; keep; A, h0; D, bias; final state, checkpoint.
        blocks = 4 * rows + 2 * bc_rows + keep + 2 * state + 2 * vec + 2 * state
        # h; Δ, Δu, y rows (float32); B, C rows (float32); keep.
        scratch = state + 3 * _tile_bytes((T, Dt), f32) + 2 * _tile_bytes((T, n), f32) + keep
    else:
        # u, Δ, z, dy, du, dΔ, dz; B, C; dB, dC partials (float32); keep; A, checkpoint,
        # dh_last, dA, dh0; D, bias, dD, dΔ-bias.
        blocks = (7 * rows + 2 * bc_rows + 2 * _tile_bytes((T, n), f32) + keep + 5 * state
                  + 4 * vec)
        # states (T + 1 of them), adjoint; Δ, Δu, gated dy, y_pre, lam·B, dΔ-from-decay rows;
        # B, C, dB, dC rows; keep.
        scratch = ((T + 1) * state + state + 6 * _tile_bytes((T, Dt), f32)
                   + 4 * _tile_bytes((T, n), f32) + keep)
    return 2 * blocks + scratch


# ---------------------------------------------------------------------------------------------
# In-kernel helpers
# ---------------------------------------------------------------------------------------------


def _softplus(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """softplus(x) = log1p(e^x) and its derivative sigmoid(x); the min keeps e^x finite."""
    linear = x > _SOFTPLUS_LINEAR_ABOVE
    value = jnp.where(linear, x, jnp.log1p(jnp.exp(jnp.minimum(x, _SOFTPLUS_LINEAR_ABOVE))))
    return value, jax.nn.sigmoid(x)


def _column(row: jax.Array) -> jax.Array:
    """(1, n) → (n, 1): a B or C row as a column to broadcast over the channel lanes.

    A transpose, not a reshape: Mosaic lowers the reshape of a column into a row through a
    sublane gather, which TPU v4 does not have; the transpose compiles on v4, v5e, v5p, v6e.
    """
    return row.T


def _row(column: jax.Array) -> jax.Array:
    """(n, 1) → (1, n), as :func:`_column`."""
    return column.T


def _unpack(refs: list, cfg: _Config, names: tuple[str, ...]) -> dict[str, Any]:
    """Name the kernel's refs; optional ones (D, z, bias, initial state...) may be absent."""
    present = dict(d=cfg.has_d, z=cfg.has_z, bias=cfg.has_bias, h0=cfg.has_initial_state,
                   keep=cfg.has_reset, keep_rows=cfg.has_reset, dd=cfg.has_d, dz=cfg.has_z,
                   dbias=cfg.has_bias, dh0=cfg.has_initial_state)
    out, refs = {}, list(refs)
    for name in names:
        out[name] = refs.pop(0) if present.get(name, True) else None
    assert not refs, (len(refs), names)
    return out


class _Block:
    """The activations of one program's time block, loaded once as float32 tiles.

    Rows past the end of the sequence (a partial last block reads unspecified values there)
    are set to 0, and the discretised Δ is 0 there too: such steps leave state and adjoint
    unchanged and contribute nothing.
    """

    def __init__(self, r: dict[str, Any], cfg: _Config, time_block: Any):
        self.cfg = cfg
        self.valid = None
        if cfg.masked:
            t = jax.lax.broadcasted_iota(jnp.int32, (cfg.block_l, 1), 0)
            self.valid = time_block * cfg.block_l + t < cfg.length
        self.r = r

    def load(self, name: str) -> jax.Array | None:
        ref = self.r[name]
        if ref is None:
            return None
        x = ref[...].astype(jnp.float32)
        return x if self.valid is None else jnp.where(self.valid, x, 0.0)

    def store_keep(self) -> None:
        """The keep factors into their float32 scratch; 1 past the end (identity steps)."""
        if self.r["keep"] is not None:
            keep = self.r["keep"][...]
            if self.valid is not None:
                keep = jnp.where(self.valid, keep, 1.0)
            self.r["keep_rows"][...] = keep

    def delta(self) -> tuple[jax.Array, jax.Array | None]:
        """The discretised Δ and, with softplus, its derivative."""
        delta = self.load("delta")
        if self.r["bias"] is not None:
            delta = delta + self.r["bias"][...]
        slope = None
        if self.cfg.softplus:
            delta, slope = _softplus(delta)
        if self.valid is not None:
            delta = jnp.where(self.valid, delta, 0.0)
        return delta, slope


# ---------------------------------------------------------------------------------------------
# Forward kernel
# ---------------------------------------------------------------------------------------------

_FORWARD_INPUTS = ("u", "delta", "a", "b", "c", "d", "z", "bias", "h0", "keep")
_FORWARD_SCRATCH = ("h", "delta_rows", "drive_rows", "y_rows", "b_rows", "c_rows", "keep_rows")


def _forward_kernel(*refs: Any, cfg: _Config, save_checkpoints: bool) -> None:
    """One program: one batch row, ``block_d`` channels, ``block_l`` time steps.

    Refs (per program): u, delta, z, y: (block_l, block_d); b, c: (block_l, n); keep:
    (block_l, 1); a = A^T, initial and final state, checkpoint: (n, block_d); d, bias:
    (1, block_d). Scratch: the carried state h (n, block_d) and float32 rows of the block.
    """
    outputs = ("y", "h_last") + (("ckpt",) if save_checkpoints else ())
    r = _unpack(refs, cfg, _FORWARD_INPUTS + outputs + _FORWARD_SCRATCH)
    time_block = pl.program_id(2)

    @pl.when(time_block == 0)
    def _():
        r["h"][...] = (r["h0"][...] if r["h0"] is not None
                       else jnp.zeros(r["h"].shape, jnp.float32))

    h = r["h"][...]
    if save_checkpoints:
        r["ckpt"][...] = h

    block = _Block(r, cfg, time_block)
    u = block.load("u")
    delta, _ = block.delta()
    r["delta_rows"][...] = delta
    r["drive_rows"][...] = delta * u
    r["b_rows"][...] = block.load("b")
    r["c_rows"][...] = block.load("c")
    block.store_keep()
    a = r["a"][...]

    def step(t, h):
        delta_t = r["delta_rows"][pl.ds(t, 1), :]  # (1, block_d)
        decay = jnp.exp(delta_t * a)  # (n, block_d)
        if r["keep_rows"] is not None:
            decay = decay * r["keep_rows"][pl.ds(t, 1), :]
        b_t = _column(r["b_rows"][pl.ds(t, 1), :])  # (n, 1)
        h = decay * h + r["drive_rows"][pl.ds(t, 1), :] * b_t
        c_t = _column(r["c_rows"][pl.ds(t, 1), :])
        r["y_rows"][pl.ds(t, 1), :] = jnp.sum(h * c_t, axis=0, keepdims=True)
        return h

    h = jax.lax.fori_loop(0, cfg.block_l, step, h, unroll=min(cfg.unroll, cfg.block_l))
    r["h"][...] = h

    y = r["y_rows"][...]
    if r["d"] is not None:
        y = y + r["d"][...] * u
    if r["z"] is not None:
        z = block.load("z")
        y = y * z * jax.nn.sigmoid(z)
    r["y"][...] = y.astype(r["y"].dtype)

    @pl.when(time_block == cfg.n_blocks - 1)
    def _():
        r["h_last"][...] = h


# ---------------------------------------------------------------------------------------------
# Block specs
# ---------------------------------------------------------------------------------------------


class _Specs:
    """BlockSpecs over the grid (batch row i, channel tile j, grid time step s).

    ``reverse`` walks the time blocks from last to first (the backward pass).
    """

    def __init__(self, cfg: _Config, reverse: bool):
        T, Dt, n, sq = cfg.block_l, cfg.block_d, cfg.d_state, pl.Squeezed()
        last = cfg.n_blocks - 1
        blk = (lambda s: last - s) if reverse else (lambda s: s)  # noqa: E731
        per_group = cfg.tiles_per_group
        # (b, l, d) activations.
        self.rows = pl.BlockSpec((sq, T, Dt), lambda i, j, s: (i, blk(s), j))
        # (b, g, l, n) B and C: the group of the program's channel tile. (lax.div: ``//`` on
        # traced ints lowers through sign(), which Mosaic resolves against the local device.)
        self.groups = pl.BlockSpec((sq, sq, T, n),
                                   lambda i, j, s: (i, jax.lax.div(j, per_group), blk(s), 0))
        # (b, d / block_d, l, n) per-tile partial sums of dB, dC.
        self.partials = pl.BlockSpec((sq, sq, T, n), lambda i, j, s: (i, j, blk(s), 0))
        # (b, l, 1) keep factors.
        self.keep = pl.BlockSpec((sq, T, 1), lambda i, j, s: (i, blk(s), 0))
        # (n, d) A^T; (1, d) D and bias.
        self.channel_states = pl.BlockSpec((n, Dt), lambda i, j, s: (0, j))
        self.channels = pl.BlockSpec((1, Dt), lambda i, j, s: (0, j))
        # (b, n, d) states; (b, 1, d) per-row parameter gradients. Their block index does not
        # depend on s: the block stays in VMEM over the time axis and is written back once.
        self.states = pl.BlockSpec((sq, n, Dt), lambda i, j, s: (i, 0, j))
        self.batch_channels = pl.BlockSpec((sq, 1, Dt), lambda i, j, s: (i, 0, j))
        # (b, n_blocks, n, d) checkpoints: the state before each time block.
        self.checkpoints = pl.BlockSpec((sq, sq, n, Dt), lambda i, j, s: (i, blk(s), 0, j))


def _grid(cfg: _Config, batch: int, d_padded: int) -> tuple[int, int, int]:
    return batch, d_padded // cfg.block_d, cfg.n_blocks


def _launch(kernel, cfg: _Config, grid, inputs, outputs, scratch, name: str):
    interpret: Any = False
    if cfg.interpret:
        # Partial last blocks read past the end of the arrays, as on the TPU: those reads
        # return NaN here (as do uninitialised scratch reads), which the masking must discard.
        interpret = pltpu.InterpretParams(out_of_bounds_reads="uninitialized")
    return pl.pallas_call(
        kernel,
        out_shape=[shape for shape, _ in outputs],
        grid=grid,
        in_specs=[spec for _, spec in inputs],
        out_specs=[spec for _, spec in outputs],
        scratch_shapes=scratch,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary"),
            vmem_limit_bytes=cfg.vmem_limit_bytes),
        interpret=interpret,
        name=name,
    )(*[x for x, _ in inputs])


def _forward(cfg: _Config, u, delta, a, B, C, D, z, delta_bias, h0, keep, *,
             save_checkpoints: bool):
    batch, length, d_padded = u.shape
    n, f32 = cfg.d_state, jnp.float32
    s = _Specs(cfg, reverse=False)
    candidates = ((u, s.rows), (delta, s.rows), (a, s.channel_states), (B, s.groups),
                  (C, s.groups), (D, s.channels), (z, s.rows), (delta_bias, s.channels),
                  (h0, s.states), (keep, s.keep))
    inputs = [(x, spec) for x, spec in candidates if x is not None]
    outputs = [(jax.ShapeDtypeStruct(u.shape, u.dtype), s.rows),
               (jax.ShapeDtypeStruct((batch, n, d_padded), f32), s.states)]
    if save_checkpoints:
        outputs.append((jax.ShapeDtypeStruct((batch, cfg.n_blocks, n, d_padded), f32),
                        s.checkpoints))
    T, Dt = cfg.block_l, cfg.block_d
    rows, bc_rows = pltpu.VMEM((T, Dt), f32), pltpu.VMEM((T, n), f32)
    scratch = [pltpu.VMEM((n, Dt), f32), rows, rows, rows, bc_rows, bc_rows]
    if cfg.has_reset:
        scratch.append(pltpu.VMEM((T, 1), f32))
    outs = _launch(functools.partial(_forward_kernel, cfg=cfg, save_checkpoints=save_checkpoints),
                   cfg, _grid(cfg, batch, d_padded), inputs, outputs, scratch,
                   "selective_scan_tpu_fwd")
    return tuple(outs) if save_checkpoints else (outs[0], outs[1], None)


# ---------------------------------------------------------------------------------------------
# Backward kernel
# ---------------------------------------------------------------------------------------------

_BACKWARD_INPUTS = ("u", "delta", "a", "b", "c", "d", "z", "bias", "keep", "ckpt", "dy",
                    "dh_last")
_BACKWARD_OUTPUTS = ("du", "ddelta", "db", "dc", "da", "dd", "dz", "dbias", "dh0")
_BACKWARD_SCRATCH = ("lam", "states", "delta_rows", "drive_rows", "g_rows", "y_rows",
                     "lam_b_rows", "decay_grad_rows", "b_rows", "c_rows", "db_rows", "dc_rows",
                     "keep_rows")


def _backward_kernel(*refs: Any, cfg: _Config) -> None:
    """Reverse-time adjoint scan for one program's (batch row, channel tile, time block).

    With a_t = keep_t exp(delta_t A), g_t = dL/dy_pre_t (the gate folded in) and
    lam_t = dL/dh_t:
        lam_t    = C_t g_t + a_{t+1} lam_{t+1}            (lam_{L-1} also gets dL/dh_final)
        du_t     = delta_t sum_n lam_t B_t + D g_t
        ddelta_t = u_t sum_n lam_t B_t + sum_n lam_t h_{t-1} a_t A        (times softplus')
        dB_t     = sum_{d in tile} lam_t delta_t u_t,   dC_t = sum_{d in tile} g_t h_t
        dA      += lam_t h_{t-1} a_t delta_t,           dh_{-1} = a_0 lam_0.
    """
    r = _unpack(refs, cfg, _BACKWARD_INPUTS + _BACKWARD_OUTPUTS + _BACKWARD_SCRATCH)
    step_index = pl.program_id(2)
    time_block = cfg.n_blocks - 1 - step_index
    T = cfg.block_l

    @pl.when(step_index == 0)
    def _():
        r["lam"][...] = r["dh_last"][...]
        r["da"][...] = jnp.zeros(r["da"].shape, jnp.float32)
        for name in ("dd", "dbias"):
            if r[name] is not None:
                r[name][...] = jnp.zeros(r[name].shape, jnp.float32)

    block = _Block(r, cfg, time_block)
    u = block.load("u")
    delta, slope = block.delta()
    dy = block.load("dy")
    z = block.load("z")
    sig_z = None if z is None else jax.nn.sigmoid(z)
    g = dy if z is None else dy * z * sig_z
    r["delta_rows"][...] = delta
    r["drive_rows"][...] = delta * u
    r["g_rows"][...] = g
    r["b_rows"][...] = block.load("b")
    r["c_rows"][...] = block.load("c")
    block.store_keep()
    a = r["a"][...]
    unroll = min(cfg.unroll, T)

    def decay_at(t):
        decay = jnp.exp(r["delta_rows"][pl.ds(t, 1), :] * a)
        if r["keep_rows"] is not None:
            decay = decay * r["keep_rows"][pl.ds(t, 1), :]
        return decay

    # Recompute the block's states from its checkpoint: states[t + 1] = h_t, states[0] = h_{-1}.
    r["states"][0] = r["ckpt"][...]

    def forward_step(t, h):
        b_t = _column(r["b_rows"][pl.ds(t, 1), :])
        h = decay_at(t) * h + r["drive_rows"][pl.ds(t, 1), :] * b_t
        r["states"][t + 1] = h
        if r["z"] is not None:  # y before the gate, for dz
            c_t = _column(r["c_rows"][pl.ds(t, 1), :])
            r["y_rows"][pl.ds(t, 1), :] = jnp.sum(h * c_t, axis=0, keepdims=True)
        return h

    jax.lax.fori_loop(0, T, forward_step, r["ckpt"][...], unroll=unroll)

    def backward_step(k, carry):
        lam_next, da_acc = carry
        t = T - 1 - k
        h, h_prev = r["states"][t + 1], r["states"][t]
        delta_t = r["delta_rows"][pl.ds(t, 1), :]
        drive_t = r["drive_rows"][pl.ds(t, 1), :]
        g_t = r["g_rows"][pl.ds(t, 1), :]
        b_t = _column(r["b_rows"][pl.ds(t, 1), :])
        c_t = _column(r["c_rows"][pl.ds(t, 1), :])
        decay = decay_at(t)
        lam = lam_next + c_t * g_t
        r["dc_rows"][pl.ds(t, 1), :] = _row(jnp.sum(h * g_t, axis=1, keepdims=True))
        r["db_rows"][pl.ds(t, 1), :] = _row(jnp.sum(lam * drive_t, axis=1, keepdims=True))
        r["lam_b_rows"][pl.ds(t, 1), :] = jnp.sum(lam * b_t, axis=0, keepdims=True)
        decay_grad = lam * h_prev * decay
        r["decay_grad_rows"][pl.ds(t, 1), :] = jnp.sum(decay_grad * a, axis=0, keepdims=True)
        return decay * lam, da_acc + decay_grad * delta_t

    lam, da_acc = jax.lax.fori_loop(
        0, T, backward_step, (r["lam"][...], jnp.zeros(a.shape, jnp.float32)), unroll=unroll)
    r["lam"][...] = lam
    r["da"][...] += da_acc

    # Per-channel gradient algebra, on whole (block_l, block_d) tiles.
    lam_b = r["lam_b_rows"][...]
    du = lam_b * delta
    ddelta = lam_b * u + r["decay_grad_rows"][...]
    if slope is not None:
        ddelta = ddelta * slope
    if block.valid is not None:
        ddelta = jnp.where(block.valid, ddelta, 0.0)
    if r["d"] is not None:
        du = du + r["d"][...] * g
        r["dd"][...] += jnp.sum(g * u, axis=0, keepdims=True)
    if r["z"] is not None:
        y_pre = r["y_rows"][...]
        if r["d"] is not None:
            y_pre = y_pre + r["d"][...] * u
        r["dz"][...] = (dy * y_pre * sig_z * (1.0 + z * (1.0 - sig_z))).astype(r["dz"].dtype)
    if r["dbias"] is not None:
        r["dbias"][...] += jnp.sum(ddelta, axis=0, keepdims=True)
    r["du"][...] = du.astype(r["du"].dtype)
    r["ddelta"][...] = ddelta.astype(r["ddelta"].dtype)
    r["db"][...] = r["db_rows"][...]
    r["dc"][...] = r["dc_rows"][...]

    if r["dh0"] is not None:
        @pl.when(step_index == cfg.n_blocks - 1)
        def _():
            r["dh0"][...] = lam


def _backward(cfg: _Config, residuals, dy, dh_last):
    u, delta, a, B, C, D, z, delta_bias, h0, keep, ckpt = residuals
    batch, length, d_padded = u.shape
    n, f32 = cfg.d_state, jnp.float32
    n_tiles = d_padded // cfg.block_d
    s = _Specs(cfg, reverse=True)
    candidates = ((u, s.rows), (delta, s.rows), (a, s.channel_states), (B, s.groups),
                  (C, s.groups), (D, s.channels), (z, s.rows), (delta_bias, s.channels),
                  (keep, s.keep), (ckpt, s.checkpoints), (dy, s.rows), (dh_last, s.states))
    inputs = [(x, spec) for x, spec in candidates if x is not None]

    partials = (jax.ShapeDtypeStruct((batch, n_tiles, length, n), f32), s.partials)
    per_row = (jax.ShapeDtypeStruct((batch, 1, d_padded), f32), s.batch_channels)
    outputs = [
        (jax.ShapeDtypeStruct(u.shape, u.dtype), s.rows),
        (jax.ShapeDtypeStruct(delta.shape, delta.dtype), s.rows),
        partials,  # dB
        partials,  # dC
        (jax.ShapeDtypeStruct((batch, n, d_padded), f32), s.states),  # dA^T
    ]
    if cfg.has_d:
        outputs.append(per_row)
    if cfg.has_z:
        outputs.append((jax.ShapeDtypeStruct(z.shape, z.dtype), s.rows))
    if cfg.has_bias:
        outputs.append(per_row)
    if cfg.has_initial_state:
        outputs.append((jax.ShapeDtypeStruct((batch, n, d_padded), f32), s.states))

    T, Dt = cfg.block_l, cfg.block_d
    rows, bc_rows = pltpu.VMEM((T, Dt), f32), pltpu.VMEM((T, n), f32)
    scratch = [pltpu.VMEM((n, Dt), f32), pltpu.VMEM((T + 1, n, Dt), f32),
               *[rows] * 6, *[bc_rows] * 4]
    if cfg.has_reset:
        scratch.append(pltpu.VMEM((T, 1), f32))
    outs = list(_launch(functools.partial(_backward_kernel, cfg=cfg), cfg,
                        _grid(cfg, batch, d_padded), inputs, outputs, scratch,
                        "selective_scan_tpu_bwd"))

    du, ddelta, db_partial, dc_partial, da_partial = outs[:5]
    del outs[:5]
    groups_shape = (batch, cfg.n_groups, cfg.tiles_per_group, length, n)
    dB = db_partial.reshape(groups_shape).sum(axis=2).astype(B.dtype)
    dC = dc_partial.reshape(groups_shape).sum(axis=2).astype(C.dtype)
    da = da_partial.sum(axis=0).astype(a.dtype)
    dD = outs.pop(0).sum(axis=0).astype(D.dtype) if cfg.has_d else None
    dz = outs.pop(0) if cfg.has_z else None
    dbias = outs.pop(0).sum(axis=0).astype(delta_bias.dtype) if cfg.has_bias else None
    dh0 = outs.pop(0).astype(h0.dtype) if cfg.has_initial_state else None
    dkeep = None if keep is None else jnp.zeros_like(keep)  # reset positions are not learnt
    return du, ddelta, da, dB, dC, dD, dz, dbias, dh0, dkeep


# ---------------------------------------------------------------------------------------------
# custom_vjp core, on the kernels' layout: A^T (n, d'), B and C (b, g, l, n), D and bias
# (1, d'), states (b, n, d'), keep (b, l, 1); d' = channels after any group padding.
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan_core(cfg: _Config, u, delta, a, B, C, D, z, delta_bias, h0, keep):
    y, h_last, _ = _forward(cfg, u, delta, a, B, C, D, z, delta_bias, h0, keep,
                            save_checkpoints=False)
    return y, h_last


def _scan_core_fwd(cfg: _Config, u, delta, a, B, C, D, z, delta_bias, h0, keep):
    y, h_last, ckpt = _forward(cfg, u, delta, a, B, C, D, z, delta_bias, h0, keep,
                               save_checkpoints=True)
    return (y, h_last), (u, delta, a, B, C, D, z, delta_bias, h0, keep, ckpt)


def _scan_core_bwd(cfg: _Config, residuals, cotangents):
    dy, dh_last = cotangents
    return _backward(cfg, residuals, dy, dh_last.astype(jnp.float32))


_scan_core.defvjp(_scan_core_fwd, _scan_core_bwd)


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def _channel_tiling(d_inner: int, n_groups: int, block_d: int) -> tuple[int, int]:
    """(channel tile, channels per group after padding) for the lane tiling.

    A one-group scan no wider than ``block_d`` is one tile of all its channels (a block equal
    to the array's extent needs no lane alignment). Otherwise a tile is the largest multiple of
    128 that divides the channels of a group and is at most ``block_d``; a group narrower than,
    or not a multiple of, 128 is padded up to one.
    """
    per_group = d_inner // n_groups
    if n_groups == 1 and d_inner <= block_d:
        return d_inner, per_group
    padded = -(-per_group // LANES) * LANES
    tile = max(t for t in range(LANES, min(block_d, padded) + 1, LANES) if padded % t == 0)
    return tile, padded


def _vmem_capacity() -> int | None:
    """VMEM bytes per TensorCore of the default device, when it is a TPU jax knows."""
    if jax.default_backend() != "tpu":
        return None
    try:
        return pltpu.get_tpu_info().vmem_capacity_bytes
    except ValueError:  # a TPU generation this jax has no table for
        return None


def _check_block_size(name: str, value: int, multiple: int) -> int:
    value = int(value)
    if value < multiple or value % multiple:
        raise ValueError(f"{name} is {value}, expected a positive multiple of {multiple}")
    return value


def selective_scan(
    u: jax.Array,
    delta: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None = None,
    z: jax.Array | None = None,
    delta_bias: jax.Array | None = None,
    initial_state: jax.Array | None = None,
    *,
    delta_softplus: bool = False,
    reset: jax.Array | None = None,
    block_d: int | None = None,
    block_l: int | None = None,
    unroll: int | None = None,
    vmem_limit_bytes: int | None = None,
    interpret: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Fused selective scan on a TPU; differentiable in every array argument (``custom_vjp``).

    Block sizes left as ``None`` take :func:`default_block_sizes`.

    Args:
      u, delta, z: (b, l, d) in float32, bfloat16 or float16.
      A: (d, n) float32.
      B, C: (b, l, g, n), g dividing d; channel c uses group c // (d // g).
      D, delta_bias: (d,).
      initial_state: (b, d, n) float32, the state before the first step.
      delta_softplus: apply softplus to ``delta + delta_bias``.
      reset: (b, l) bool (or 0/1 floats), True at the first position of a packed segment:
        there the state before the position is dropped, ``h_t = Δ_t B_t u_t`` (a reset at
        t = 0 drops ``initial_state``). Not differentiated.
      block_d: channels per program, a multiple of 128 (a one-group scan of at most
        ``block_d`` channels runs as one tile of all of them).
      block_l: time steps per program, a multiple of 8 (16 for 16-bit inputs); sequences
        shorter than it run as one block.
      unroll: time steps per iteration of the in-kernel loops.
      vmem_limit_bytes: Mosaic's scoped VMEM limit; by default :func:`vmem_bytes` of the
        larger of the two kernels plus headroom, capped at the TPU's VMEM.
      interpret: run the kernels in Pallas' TPU interpret mode (any backend; slow).

    Returns:
      y: (b, l, d) in u.dtype, and the final state (b, d, n) float32.
    """
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    n_groups = B.shape[2]
    if (delta.shape != u.shape or A.shape != (d_inner, d_state)
            or B.shape != (batch, length, n_groups, d_state) or C.shape != B.shape
            or d_inner % n_groups or (z is not None and z.shape != u.shape)):
        raise ValueError(
            f"shapes u {u.shape}, delta {delta.shape}, A {A.shape}, B {B.shape}, C {C.shape}"
            f"{'' if z is None else f', z {z.shape}'} do not follow (b, l, d), (d, n), "
            "(b, l, g, n) with g dividing d")
    if initial_state is not None and initial_state.shape != (batch, d_inner, d_state):
        raise ValueError(f"initial_state has shape {initial_state.shape}, expected "
                         f"{(batch, d_inner, d_state)}")
    if reset is not None and reset.shape != (batch, length):
        raise ValueError(f"reset has shape {reset.shape}, expected {(batch, length)}")

    defaults = default_block_sizes()
    block_d = _check_block_size("block_d", defaults["block_d"] if block_d is None else block_d,
                                LANES)
    narrowest = min(x.dtype.itemsize for x in (u, delta, B, C, z) if x is not None)
    block_l = _check_block_size("block_l", defaults["block_l"] if block_l is None else block_l,
                                SUBLANES * max(1, 4 // narrowest))
    unroll = max(1, int(defaults["unroll"] if unroll is None else unroll))
    tile, per_group = _channel_tiling(d_inner, n_groups, block_d)
    block_l = min(block_l, length)
    itemsize = max(x.dtype.itemsize for x in (u, delta, B, C, z) if x is not None)
    budget = max(vmem_bytes(tile, block_l, d_state, itemsize, backward=b) for b in (False, True))
    capacity = _vmem_capacity()
    if capacity is not None and budget > capacity:
        raise ValueError(f"block_d = {tile} and block_l = {block_l} need {budget} bytes of VMEM "
                         f"at d_state = {d_state}, expected at most this TPU's {capacity}")
    if vmem_limit_bytes is None:
        # Headroom over the computed budget for Mosaic's internal scratch.
        vmem_limit_bytes = int(budget * 1.25) + (4 << 20)
        if capacity is not None:
            vmem_limit_bytes = min(vmem_limit_bytes, capacity)
    cfg = _Config(
        length=length,
        d_state=d_state,
        n_groups=n_groups,
        block_d=tile,
        block_l=block_l,
        tiles_per_group=per_group // tile,
        unroll=unroll,
        has_d=D is not None,
        has_z=z is not None,
        has_bias=delta_bias is not None,
        softplus=bool(delta_softplus),
        has_initial_state=initial_state is not None,
        has_reset=reset is not None,
        vmem_limit_bytes=int(vmem_limit_bytes),
        interpret=bool(interpret),
    )

    pad = per_group - d_inner // n_groups

    def channels_last(x, fill=0.0):
        """(..., d) → (..., g · per_group), each group's channels padded with ``fill``."""
        if not pad:
            return x
        x = x.reshape(*x.shape[:-1], n_groups, d_inner // n_groups)
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)], constant_values=fill)
        return x.reshape(*x.shape[:-2], n_groups * per_group)

    f32 = jnp.float32
    a = channels_last(A.astype(f32).T)
    as_row = lambda v: None if v is None else channels_last(v.astype(f32))[None, :]  # noqa: E731
    h0 = None
    if initial_state is not None:
        h0 = channels_last(jnp.swapaxes(initial_state.astype(f32), 1, 2))
    keep = None if reset is None else (1.0 - reset.astype(f32))[:, :, None]
    y, h_last = _scan_core(
        cfg, channels_last(u), channels_last(delta), a, jnp.swapaxes(B, 1, 2),
        jnp.swapaxes(C, 1, 2), as_row(D), None if z is None else channels_last(z),
        as_row(delta_bias), h0, keep)
    if pad:
        keep_channels = lambda x: x.reshape(*x.shape[:-1], n_groups, per_group)[  # noqa: E731
            ..., : d_inner // n_groups].reshape(*x.shape[:-1], d_inner)
        y, h_last = keep_channels(y), keep_channels(h_last)
    return y, jnp.swapaxes(h_last, 1, 2)
