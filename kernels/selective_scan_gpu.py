"""Fused selective scan (Mamba's S6, §3.3 and Appendix D) as Pallas GPU kernels.

Semantics are those of mamba-ssm's ``selective_scan_ref`` in the (batch, length, channels)
layout::

    delta = softplus(delta + delta_bias)                 (bias and softplus optional)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      h_{-1} = initial_state
    y_t   = (sum_n C_t[n] * h_t[:, n] + D * u_t) * silu(z_t)      (D, z optional)

with ``exp(delta_t * A)`` replaced by 0 where the optional ``reset`` is set: a packed segment
starts at t and the state before it is forgotten (``ssmjax.ops.selective_scan`` derives ``reset``
from ``segment_ids``; its docstring has the convention).

Design (measurements, and the variants that lost, are in ``kernels/NOTES.md``):

* One program owns ``block_d`` channels of one batch row and walks the whole sequence, so
  its (block_d, d_state) state stays in registers and no (b, l, d, n) tensor reaches HBM.
* The forward pass keeps the loads of the next ``prefetch`` time steps in flight: each step
  issues the load for a later step before its own arithmetic. The loop body is ``unroll``
  steps so that the queue of prefetched rows never has to be shifted in registers.
* The forward pass used for training also writes the state every ``chunk`` steps, a
  (b, l / chunk, d, n) float32 checkpoint. The backward kernel walks the chunks in reverse:
  it reloads a checkpoint, recomputes the chunk's states into registers, then runs the
  adjoint recurrence ``lam_t = C_t g_t + exp(delta_{t+1} A) lam_{t+1}`` back through them.
* Gradients of B and C sum over the channels of a group: each program writes its block's
  partial sum per step and the wrapper adds the ``d / (g * block_d)`` partials.
* A reset costs one scalar load per step and program, and no pass over (b, l, d): it enters
  the exponent of the decay, exp2(delta * A log2(e) + r) with r = -inf at a segment start and 0
  elsewhere, so exp(delta A) becomes exactly 0 there in both kernels. The backward's adjoint
  ``lam_{t-1} = ... + a_t lam_t`` and the gradients through ``a_t`` then stop at the boundary
  with no other change.
* Every (channels, states) tile (A, states, checkpoints, dA) lives in HBM in its natural
  (d, n) layout and moves as one 2-D access. Triton then gives the whole recurrence the
  layout of those accesses: 4 consecutive states of one channel per thread, so a step's
  B and C rows arrive as vector loads and per-channel work is replicated over only 4 lanes.

All arithmetic is float32 whatever the input dtype. The kernels lower through Pallas'
Triton backend; ``interpret=True`` runs them anywhere (the CPU tests use it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from .common import SOFTPLUS_LINEAR_ABOVE, require_triton_lowering, triton_lowering

# jax 0.10 and 0.11 ship it; None in a jax without it, where selective_scan raises.
plgpu = triton_lowering()

__all__ = ["selective_scan", "default_block_sizes"]

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


# ---------------------------------------------------------------------------------------------
# Tuned defaults
# ---------------------------------------------------------------------------------------------

# Keyed by a substring of ``jax.Device.device_kind``; the first match wins, "" is the fallback.
# "H100" is the best of ``experiments/benchmarks/selective_scan.py --autotune`` (L = 2048,
# bf16, d_state 16; kernels/NOTES.md). Other GPUs get the same values, untuned.
_H100 = dict(block_d=8, num_warps=1, unroll=16, prefetch=16, chunk=4, bwd_block_d=8,
             bwd_num_warps=1, num_stages=1)
_TUNED_BLOCK_SIZES: dict[str, dict[str, int]] = {"H100": _H100, "": _H100}


def default_block_sizes(device_kind: str | None = None) -> dict[str, int]:
    """The tuned block sizes for a GPU (``jax.devices()[0].device_kind`` when not given)."""
    if device_kind is None:
        try:
            device_kind = jax.devices()[0].device_kind
        except RuntimeError:  # pragma: no cover - no backend at all
            device_kind = ""
    for key, sizes in _TUNED_BLOCK_SIZES.items():
        if key and key in device_kind:
            return dict(sizes)
    return dict(_TUNED_BLOCK_SIZES[""])


# ---------------------------------------------------------------------------------------------
# Static configuration shared by the kernels and their custom_vjp
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Config:
    length: int
    d_state: int  # a power of two (the wrapper pads)
    n_groups: int
    block_d: int
    num_warps: int
    unroll: int  # forward steps per loop iteration, a multiple of ``chunk``
    prefetch: int  # forward steps whose loads are in flight ahead of the current one
    chunk: int  # steps between saved states = backward steps per loop iteration
    bwd_block_d: int
    bwd_num_warps: int
    num_stages: int
    has_d: bool
    has_z: bool
    has_bias: bool
    softplus: bool
    has_initial_state: bool
    has_reset: bool
    interpret: bool

    @property
    def n_chunks(self) -> int:
        return -(-self.length // self.chunk)


def _largest_power_of_two_dividing(n: int, cap: int) -> int:
    size = 1
    while size * 2 <= cap and n % (size * 2) == 0:
        size *= 2
    return size


# ---------------------------------------------------------------------------------------------
# In-kernel helpers
# ---------------------------------------------------------------------------------------------


def _index(t: Any) -> Any:
    return jnp.int32(t) if isinstance(t, int) else t


def _store(ref: Any, index: tuple, value: jax.Array, valid: Any = None) -> None:
    """``ref[index] = value`` (only where the scalar ``valid`` holds, if given).

    Goes through ``plgpu.store``: ref assignment lowers to a swap, i.e. an extra dead load.
    """
    index = tuple(_index(i) for i in index)
    value = value.astype(ref.dtype)
    mask = None if valid is None else jnp.broadcast_to(valid, value.shape)
    plgpu.store(ref.at[index], value, mask=mask)


class _Math:
    """float32 special functions: single MUFU instructions on the GPU, exact in interpret mode.

    ``ex2``/``lg2``/``rcp`` have a relative error of a few ulp on the GPU, far inside the
    float32 test tolerance; the formulas built on them are the same in both modes, so the
    CPU tests exercise them.
    """

    def __init__(self, interpret: bool):
        self.interpret = interpret

    def _ptx(self, instruction: str, x: jax.Array) -> jax.Array:
        [out] = plgpu.elementwise_inline_asm(
            f"{instruction}.approx.ftz.f32 $0, $1;", args=[x], constraints="=f,f", pack=1,
            result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, jnp.float32)])
        return out

    def ex2(self, x: jax.Array) -> jax.Array:
        return jnp.exp2(x) if self.interpret else self._ptx("ex2", x)

    def lg2(self, x: jax.Array) -> jax.Array:
        return jnp.log2(x) if self.interpret else self._ptx("lg2", x)

    def rcp(self, x: jax.Array) -> jax.Array:
        return 1.0 / x if self.interpret else self._ptx("rcp", x)

    def sigmoid(self, x: jax.Array) -> jax.Array:
        return self.rcp(1.0 + self.ex2(-_LOG2E * x))

    def softplus(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """softplus(x) = log1p(e^x) and its derivative sigmoid(x), sharing one exp.

        log1p(e) = log(w) * e / (w - 1) with w = fl(1 + e) stays accurate when e << 1
        (w - 1 is exact; the ratio cancels the rounding of w); w == 1 means log1p(e) = e.
        Where e overflows (x > 88) the formulas give nan, but only in the discarded branch.
        """
        e = self.ex2(_LOG2E * x)
        w = 1.0 + e
        log1p_e = jnp.where(w == 1.0, e, self.lg2(w) * _LN2 * e * self.rcp(w - 1.0))
        linear = x > SOFTPLUS_LINEAR_ABOVE
        return jnp.where(linear, x, log1p_e), jnp.where(linear, 1.0, e * self.rcp(w))


def _unpack(refs: list, cfg: _Config, names: tuple[str, ...]) -> dict[str, Any]:
    """Name the kernel's refs; optional ones (D, z, bias, initial state...) may be absent."""
    present = dict(d=cfg.has_d, z=cfg.has_z, bias=cfg.has_bias, h0=cfg.has_initial_state,
                   reset=cfg.has_reset, dd=cfg.has_d, dz=cfg.has_z, dbias=cfg.has_bias,
                   dh0=cfg.has_initial_state)
    out, refs = {}, list(refs)
    for name in names:
        out[name] = refs.pop(0) if present.get(name, True) else None
    assert not refs, (len(refs), names)
    return out


def _decay_exponent(delta: jax.Array, a2: jax.Array, row: dict[str, Any], valid: Any) -> jax.Array:
    """log2 of the decay exp(delta A): ``delta * a2``, or -inf (a decay of exactly 0) at a
    reset, where a segment starts. A masked step past the end (``valid`` False) never resets.
    """
    exponent = delta[:, None] * a2
    if "reset" not in row:
        return exponent
    starts = row["reset"] != 0
    if valid is not None:
        starts = jnp.logical_and(starts, valid)
    # An add, which the compiler can fold into the multiply (an FMA): no extra instruction per
    # state element. The constants are typed: the Triton lowering gives a weakly typed constant
    # of a select the predicate's type (i1), which cannot hold -inf.
    offset = jnp.where(starts, np.float32(-np.inf), np.float32(0.0))
    return exponent + offset


# ---------------------------------------------------------------------------------------------
# Forward kernel
# ---------------------------------------------------------------------------------------------

_FORWARD_INPUTS = ("u", "delta", "a2", "b", "c", "d", "z", "bias", "h0", "reset")


def _forward_kernel(*refs: Any, cfg: _Config, save_checkpoints: bool) -> None:
    """One program: channels [j*block_d, (j+1)*block_d) of one batch row, all time steps.

    Refs (per program): u, delta, z, y: (L, block_d); b, c: (L, n); a2 = A log2(e), initial
    and final state: (block_d, n); d, bias: (block_d,); reset: (L,) int32, nonzero where a
    segment starts; ckpt: (n_chunks, block_d, n), the state *before* each chunk.
    """
    outputs = ("y", "h_last") + (("ckpt",) if save_checkpoints else ())
    r = _unpack(refs, cfg, _FORWARD_INPUTS + outputs)
    math = _Math(cfg.interpret)
    length, unroll, chunk, ahead = cfg.length, cfg.unroll, cfg.chunk, cfg.prefetch
    a2 = r["a2"][...]
    skip = r["d"][...].astype(jnp.float32) if r["d"] is not None else None
    bias = r["bias"][...].astype(jnp.float32) if r["bias"] is not None else None
    h = r["h0"][...].astype(jnp.float32) if r["h0"] is not None else jnp.zeros_like(a2)
    # A length that is not a multiple of ``unroll`` runs one more iteration with the steps
    # past the end masked: delta = 0 there makes a step the identity on the state.
    masked = length % unroll != 0

    def load_rows(t):
        # Past the end, reload the last row: keeps every load unmasked.
        t = _index(min(t, length - 1) if isinstance(t, int) else jnp.minimum(t, length - 1))
        names = ("u", "delta", "b", "c") + (("z",) if r["z"] is not None else ())
        row = {name: r[name][t, :] for name in names}
        if r["reset"] is not None:
            row["reset"] = r["reset"][t]
        return row

    def step(row, h, valid):
        u = row["u"].astype(jnp.float32)
        delta = row["delta"].astype(jnp.float32)
        if bias is not None:
            delta = delta + bias
        if cfg.softplus:
            delta, _ = math.softplus(delta)
        if valid is not None:
            delta = jnp.where(valid, delta, 0.0)
        decay = math.ex2(_decay_exponent(delta, a2, row, valid))
        h = decay * h + (delta * u)[:, None] * row["b"].astype(jnp.float32)[None, :]
        y = jnp.sum(h * row["c"].astype(jnp.float32)[None, :], axis=1)
        if skip is not None:
            y = y + skip * u
        if r["z"] is not None:
            z = row["z"].astype(jnp.float32)
            y = y * z * math.sigmoid(z)
        return h, y

    def run_steps(i, carry):
        # ``pending`` holds the rows of the next ``ahead`` steps. Each step issues the load
        # ``ahead`` steps on before its own arithmetic; written after a store, a load could
        # not be hoisted by the compiler (they might alias), so this order is what keeps
        # loads in flight across steps and loop iterations.
        h, pending = carry
        pending = list(pending)
        for k in range(unroll):
            t = i * unroll + k
            valid = t < length if masked else None
            if ahead:
                pending.append(load_rows(t + ahead))
                row = pending.pop(0)
            else:
                row = load_rows(t)
            if r.get("ckpt") is not None and k % chunk == 0:
                _store(r["ckpt"], (t // chunk, slice(None), slice(None)), h, valid)
            h, y = step(row, h, valid)
            _store(r["y"], (t, slice(None)), y, valid)
        return h, tuple(pending)

    pending = tuple(load_rows(k) for k in range(ahead))
    h, _ = jax.lax.fori_loop(0, -(-length // unroll), run_steps, (h, pending))
    _store(r["h_last"], (slice(None), slice(None)), h)


# ---------------------------------------------------------------------------------------------
# Block specs (1-D grid over batch rows x channel blocks, channel blocks fastest so that
# neighbouring programs share B and C rows in L2)
# ---------------------------------------------------------------------------------------------


class _Specs:
    def __init__(self, batch: int, length: int, d_inner: int, cfg: _Config, block: int):
        self.n_blocks = n_blocks = d_inner // block
        blocks_per_group = (d_inner // cfg.n_groups) // block
        n, sq = cfg.d_state, pl.Squeezed()
        row = lambda i: (i // n_blocks, 0, i % n_blocks)  # noqa: E731
        self.grid = (batch * n_blocks,)
        # (b, l, d) activations: all time steps of one channel block.
        self.rows = pl.BlockSpec((sq, length, block), row)
        # (b, l, g, n) B and C: the group of the program's channel block.
        self.groups = pl.BlockSpec(
            (sq, length, sq, n), lambda i: (i // n_blocks, 0, (i % n_blocks) // blocks_per_group, 0))
        # (b, l, d // block, n) per-block partial sums of dB, dC.
        self.partial_groups = pl.BlockSpec((sq, length, sq, n),
                                           lambda i: (i // n_blocks, 0, i % n_blocks, 0))
        self.channels = pl.BlockSpec((block,), lambda i: (i % n_blocks,))  # (d,)
        self.channel_states = pl.BlockSpec((block, n), lambda i: (i % n_blocks, 0))  # (d, n)
        self.batch_channels = pl.BlockSpec((sq, block), lambda i: (i // n_blocks, i % n_blocks))
        self.batch_rows = pl.BlockSpec((sq, length), lambda i: (i // n_blocks, 0))  # (b, l)
        self.states = pl.BlockSpec((sq, block, n), lambda i: (i // n_blocks, i % n_blocks, 0))
        self.checkpoints = pl.BlockSpec((sq, cfg.n_chunks, block, n),
                                        lambda i: (i // n_blocks, 0, i % n_blocks, 0))


def _compiler_params(cfg: _Config, num_warps: int) -> Any:
    if cfg.interpret:
        return None
    return plgpu.CompilerParams(num_warps=num_warps, num_stages=cfg.num_stages)


def _forward(cfg: _Config, u, delta, a2, B, C, D, z, delta_bias, h0, reset, *,
             save_checkpoints: bool):
    batch, length, d_inner = u.shape
    s = _Specs(batch, length, d_inner, cfg, cfg.block_d)
    candidates = ((u, s.rows), (delta, s.rows), (a2, s.channel_states), (B, s.groups),
                  (C, s.groups), (D, s.channels), (z, s.rows), (delta_bias, s.channels),
                  (h0, s.states), (reset, s.batch_rows))
    inputs = [(x, spec) for x, spec in candidates if x is not None]
    out_shape = [jax.ShapeDtypeStruct(u.shape, u.dtype),
                 jax.ShapeDtypeStruct((batch, d_inner, cfg.d_state), jnp.float32)]
    out_specs = [s.rows, s.states]
    if save_checkpoints:
        out_shape.append(jax.ShapeDtypeStruct((batch, cfg.n_chunks, d_inner, cfg.d_state),
                                              jnp.float32))
        out_specs.append(s.checkpoints)
    outs = pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg, save_checkpoints=save_checkpoints),
        out_shape=out_shape,
        grid=s.grid,
        in_specs=[spec for _, spec in inputs],
        out_specs=out_specs,
        compiler_params=_compiler_params(cfg, cfg.num_warps),
        interpret=cfg.interpret,
        name="selective_scan_fwd",
    )(*[x for x, _ in inputs])
    return tuple(outs) if save_checkpoints else (outs[0], outs[1], None)


# ---------------------------------------------------------------------------------------------
# Backward kernel
# ---------------------------------------------------------------------------------------------

_BACKWARD_INPUTS = ("u", "delta", "a2", "b", "c", "d", "z", "bias", "reset", "ckpt", "dy",
                    "dh_last")
_BACKWARD_OUTPUTS = ("du", "ddelta", "db", "dc", "da2", "dd", "dz", "dbias", "dh0")


def _backward_kernel(*refs: Any, cfg: _Config) -> None:
    """Reverse-time adjoint scan for one program's (batch row, channel block).

    With a_t = exp(delta_t A), g_t = dL/dy_pre_t (the gate folded in) and lam_t = dL/dh_t:
        lam_t    = C_t g_t + a_{t+1} lam_{t+1}            (lam_{L-1} also gets dL/dh_final)
        du_t     = delta_t sum_n lam_t B_t + D g_t
        ddelta_t = u_t sum_n lam_t B_t + sum_n lam_t h_{t-1} a_t A        (times softplus')
        dB_t     = sum_{d in block} lam_t delta_t u_t,     dC_t = sum_{d in block} g_t h_t
        dA      += lam_t h_{t-1} a_t delta_t,              dh_{-1} = a_0 lam_0.
    At a reset a_t = 0, so nothing flows back across a segment start.
    """
    r = _unpack(refs, cfg, _BACKWARD_INPUTS + _BACKWARD_OUTPUTS)
    math = _Math(cfg.interpret)
    chunk, length = cfg.chunk, cfg.length
    a2 = r["a2"][...]
    skip = r["d"][...].astype(jnp.float32) if r["d"] is not None else None
    bias = r["bias"][...].astype(jnp.float32) if r["bias"] is not None else None
    # A length that is not a multiple of ``chunk`` masks the steps past the end of the last
    # chunk: delta = 0 and g = 0 there make a step the identity on state and adjoint.
    masked = length % chunk != 0

    def load_rows(t):
        t = _index(jnp.minimum(t, length - 1) if masked else t)
        names = ("u", "delta", "b", "c", "dy") + (("z",) if r["z"] is not None else ())
        row = {name: r[name][t, :] for name in names}
        if r["reset"] is not None:
            row["reset"] = r["reset"][t]
        return row

    def load_chunk(chunk_index):
        rows = [load_rows(chunk_index * chunk + k) for k in range(chunk)]
        return rows, r["ckpt"][chunk_index, :, :]

    def run_chunk(i, carry):
        (lam_next, da2_acc, dd_acc, dbias_acc), (rows, h) = carry
        chunk_index = cfg.n_chunks - 1 - i
        t0 = chunk_index * chunk
        # The next chunk's loads go out before this chunk's arithmetic and stores (see
        # _forward_kernel); the first chunk reloads itself at the end, harmlessly.
        upcoming = load_chunk(jnp.maximum(chunk_index - 1, 0))

        # Recompute the chunk's states from its checkpoint; they stay in registers.
        saved = []
        for k, row in enumerate(rows):
            u = row["u"].astype(jnp.float32)
            delta = row["delta"].astype(jnp.float32)
            if bias is not None:
                delta = delta + bias
            slope = None
            if cfg.softplus:
                delta, slope = math.softplus(delta)
            valid = t0 + k < length if masked else None
            if valid is not None:
                delta = jnp.where(valid, delta, 0.0)
            decay = math.ex2(_decay_exponent(delta, a2, row, valid))
            saved.append((h, u, delta, slope, decay))
            h = decay * h + (delta * u)[:, None] * row["b"].astype(jnp.float32)[None, :]

        for k in reversed(range(chunk)):
            h_prev, u, delta, slope, decay = saved[k]
            row, t = rows[k], t0 + k
            valid = t < length if masked else None
            b = row["b"].astype(jnp.float32)
            c = row["c"].astype(jnp.float32)
            dy = row["dy"].astype(jnp.float32)
            if valid is not None:
                dy = jnp.where(valid, dy, 0.0)
            if r["z"] is not None:
                z = row["z"].astype(jnp.float32)
                sig_z = math.sigmoid(z)
                y_pre = jnp.sum(h * c[None, :], axis=1)
                if skip is not None:
                    y_pre = y_pre + skip * u
                g = dy * z * sig_z
                _store(r["dz"], (t, slice(None)),
                       dy * y_pre * sig_z * (1.0 + z * (1.0 - sig_z)), valid)
            else:
                g = dy
            lam = lam_next + g[:, None] * c[None, :]
            _store(r["dc"], (t, slice(None)), jnp.sum(h * g[:, None], axis=0), valid)
            _store(r["db"], (t, slice(None)), jnp.sum(lam * (delta * u)[:, None], axis=0), valid)
            lam_b = jnp.sum(lam * b[None, :], axis=1)
            # d decay / d delta = decay * a2 * ln2; dA's ln2 is applied once, at the end.
            decay_grad = lam * h_prev * decay
            ddelta = lam_b * u + jnp.sum(decay_grad * a2, axis=1) * _LN2
            da2_acc = da2_acc + decay_grad * delta[:, None]
            du = lam_b * delta
            if skip is not None:
                du = du + skip * g
                dd_acc = dd_acc + g * u
            if slope is not None:
                ddelta = ddelta * slope
            if valid is not None:
                ddelta = jnp.where(valid, ddelta, 0.0)
            if bias is not None:
                dbias_acc = dbias_acc + ddelta
            _store(r["du"], (t, slice(None)), du, valid)
            _store(r["ddelta"], (t, slice(None)), ddelta, valid)
            lam_next = decay * lam
            h = h_prev
        return (lam_next, da2_acc, dd_acc, dbias_acc), upcoming

    zeros_row = jnp.zeros((a2.shape[0],), jnp.float32)
    carry = (r["dh_last"][...].astype(jnp.float32), jnp.zeros_like(a2), zeros_row, zeros_row)
    (lam_next, da2_acc, dd_acc, dbias_acc), _ = jax.lax.fori_loop(
        0, cfg.n_chunks, run_chunk, (carry, load_chunk(cfg.n_chunks - 1)))
    everything = (slice(None), slice(None))
    _store(r["da2"], everything, da2_acc * _LN2)
    if r["dd"] is not None:
        _store(r["dd"], (slice(None),), dd_acc)
    if r["dbias"] is not None:
        _store(r["dbias"], (slice(None),), dbias_acc)
    if r["dh0"] is not None:
        _store(r["dh0"], everything, lam_next)


def _backward(cfg: _Config, residuals, dy, dh_last):
    u, delta, a2, B, C, D, z, delta_bias, h0, reset, ckpt = residuals
    batch, length, d_inner = u.shape
    n = cfg.d_state
    s = _Specs(batch, length, d_inner, cfg, cfg.bwd_block_d)
    candidates = ((u, s.rows), (delta, s.rows), (a2, s.channel_states), (B, s.groups),
                  (C, s.groups), (D, s.channels), (z, s.rows), (delta_bias, s.channels),
                  (reset, s.batch_rows), (ckpt, s.checkpoints), (dy, s.rows), (dh_last, s.states))
    inputs = [(x, spec) for x, spec in candidates if x is not None]

    f32 = jnp.float32
    partial_sums = (jax.ShapeDtypeStruct((batch, length, s.n_blocks, n), f32), s.partial_groups)
    outputs = [
        (jax.ShapeDtypeStruct(u.shape, u.dtype), s.rows),
        (jax.ShapeDtypeStruct(delta.shape, delta.dtype), s.rows),
        partial_sums,  # dB
        partial_sums,  # dC
        (jax.ShapeDtypeStruct((batch, d_inner, n), f32), s.states),
    ]
    if cfg.has_d:
        outputs.append((jax.ShapeDtypeStruct((batch, d_inner), f32), s.batch_channels))
    if cfg.has_z:
        outputs.append((jax.ShapeDtypeStruct(z.shape, z.dtype), s.rows))
    if cfg.has_bias:
        outputs.append((jax.ShapeDtypeStruct((batch, d_inner), f32), s.batch_channels))
    if cfg.has_initial_state:
        outputs.append((jax.ShapeDtypeStruct((batch, d_inner, n), f32), s.states))

    outs = list(pl.pallas_call(
        functools.partial(_backward_kernel, cfg=cfg),
        out_shape=[shape for shape, _ in outputs],
        grid=s.grid,
        in_specs=[spec for _, spec in inputs],
        out_specs=[spec for _, spec in outputs],
        compiler_params=_compiler_params(cfg, cfg.bwd_num_warps),
        interpret=cfg.interpret,
        name="selective_scan_bwd",
    )(*[x for x, _ in inputs]))

    du, ddelta, db_partial, dc_partial, da2_partial = outs[:5]
    del outs[:5]
    groups_shape = (batch, length, cfg.n_groups, s.n_blocks // cfg.n_groups, n)
    dB = db_partial.reshape(groups_shape).sum(axis=3).astype(B.dtype)
    dC = dc_partial.reshape(groups_shape).sum(axis=3).astype(C.dtype)
    da2 = da2_partial.sum(axis=0).astype(a2.dtype)
    dD = outs.pop(0).sum(axis=0).astype(D.dtype) if cfg.has_d else None
    dz = outs.pop(0) if cfg.has_z else None
    dbias = outs.pop(0).sum(axis=0).astype(delta_bias.dtype) if cfg.has_bias else None
    dh0 = outs.pop(0).astype(h0.dtype) if cfg.has_initial_state else None
    # reset is an integer input: no cotangent.
    return du, ddelta, da2, dB, dC, dD, dz, dbias, dh0, None


# ---------------------------------------------------------------------------------------------
# custom_vjp core (A as a2 = A log2(e), d_state a power of two)
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan_core(cfg: _Config, u, delta, a2, B, C, D, z, delta_bias, h0, reset):
    y, h_last, _ = _forward(cfg, u, delta, a2, B, C, D, z, delta_bias, h0, reset,
                            save_checkpoints=False)
    return y, h_last


def _scan_core_fwd(cfg: _Config, u, delta, a2, B, C, D, z, delta_bias, h0, reset):
    y, h_last, ckpt = _forward(cfg, u, delta, a2, B, C, D, z, delta_bias, h0, reset,
                               save_checkpoints=True)
    return (y, h_last), (u, delta, a2, B, C, D, z, delta_bias, h0, reset, ckpt)


def _scan_core_bwd(cfg: _Config, residuals, cotangents):
    dy, dh_last = cotangents
    return _backward(cfg, residuals, dy, dh_last.astype(jnp.float32))


_scan_core.defvjp(_scan_core_fwd, _scan_core_bwd)


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


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
    reset: jax.Array | None = None,
    *,
    delta_softplus: bool = False,
    block_d: int | None = None,
    num_warps: int | None = None,
    unroll: int | None = None,
    prefetch: int | None = None,
    chunk: int | None = None,
    bwd_block_d: int | None = None,
    bwd_num_warps: int | None = None,
    num_stages: int | None = None,
    interpret: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Fused selective scan; differentiable in every array argument (``jax.custom_vjp``).

    Block sizes left as ``None`` take the tuned defaults for the current GPU
    (:func:`default_block_sizes`).

    Args:
      u, delta, z: (b, l, d) in float32, bfloat16 or float16.
      A: (d, n) float32.
      B, C: (b, l, g, n), g dividing d; channel c uses group c // (d // g).
      D, delta_bias: (d,).
      initial_state: (b, d, n) float32, the state before the first step.
      reset: (b, l) bool or integer, True (nonzero) where a segment starts: exp(delta_t A) is
        0 there, so h_t = delta_t B_t u_t (at t = 0 the initial state is dropped).
      delta_softplus: apply softplus to ``delta + delta_bias``.
      block_d: channels per forward program (a power of two; halved until it divides d // g).
      num_warps: warps per forward program.
      unroll: forward time steps per loop iteration (rounded up to a multiple of ``chunk``).
      prefetch: forward steps whose loads are in flight ahead of the step being computed.
      chunk: steps between saved states, and backward steps per loop iteration.
      bwd_block_d, bwd_num_warps: channels and warps per backward program.
      num_stages: Triton's software-pipelining depth.
      interpret: run the kernels in Pallas interpret mode (any backend; slow).

    Returns:
      y: (b, l, d) in u.dtype, and the final state (b, d, n) float32.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state, reset)
    require_triton_lowering("ssmjax.kernels.selective_scan",
                            "ssmjax.ops.selective_scan's XLA backends need no kernel")
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    n_groups = B.shape[2]

    tuned = default_block_sizes()
    pick = lambda value, name: tuned[name] if value is None else int(value)  # noqa: E731
    channels_per_group = d_inner // n_groups
    chunk = max(1, pick(chunk, "chunk"))
    # Triton tensors need power-of-two extents: pad the state with inert entries
    # (A = 0, B = C = 0 and a zero initial state keep them at zero and out of y).
    padded_state = 1 << max(0, (d_state - 1).bit_length())

    def scaled_warps(name):
        # The defaults are tuned at d_state = 16; a larger state keeps the elements per thread
        # (and so the registers, which the backward multiplies by ``chunk``) about constant.
        return int(min(8, tuned[name] * max(1, padded_state // 16)))

    cfg = _Config(
        length=length,
        d_state=padded_state,
        n_groups=n_groups,
        block_d=_largest_power_of_two_dividing(channels_per_group, pick(block_d, "block_d")),
        num_warps=num_warps if num_warps is not None else scaled_warps("num_warps"),
        unroll=chunk * max(1, -(-pick(unroll, "unroll") // chunk)),
        prefetch=max(0, pick(prefetch, "prefetch")),
        chunk=chunk,
        bwd_block_d=_largest_power_of_two_dividing(channels_per_group,
                                                   pick(bwd_block_d, "bwd_block_d")),
        bwd_num_warps=(bwd_num_warps if bwd_num_warps is not None
                       else scaled_warps("bwd_num_warps")),
        num_stages=pick(num_stages, "num_stages"),
        has_d=D is not None,
        has_z=z is not None,
        has_bias=delta_bias is not None,
        softplus=bool(delta_softplus),
        has_initial_state=initial_state is not None,
        has_reset=reset is not None,
        interpret=bool(interpret),
    )

    a2 = A.astype(jnp.float32) * _LOG2E  # exp(delta * A) = exp2(delta * a2)
    h0 = None if initial_state is None else initial_state.astype(jnp.float32)
    pad = padded_state - d_state
    if pad:
        a2 = jnp.pad(a2, ((0, 0), (0, pad)))
        B = jnp.pad(B, ((0, 0), (0, 0), (0, 0), (0, pad)))
        C = jnp.pad(C, ((0, 0), (0, 0), (0, 0), (0, pad)))
        if h0 is not None:
            h0 = jnp.pad(h0, ((0, 0), (0, 0), (0, pad)))
    reset = None if reset is None else (reset != 0).astype(jnp.int32)
    y, h_last = _scan_core(cfg, u, delta, a2, B, C, D, z, delta_bias, h0, reset)
    return y, h_last[:, :, :d_state]


def _check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state, reset) -> None:
    """``ValueError`` naming the first argument off the kernel's contract."""
    def error(name, x, expected):
        return ValueError(f"{name} has shape {tuple(x.shape)}, expected {expected}")

    if u.ndim != 3:
        raise error("u", u, "(batch, length, channels)")
    batch, length, d_inner = u.shape
    if A.ndim != 2 or A.shape[0] != d_inner:
        raise error("A", A, f"({d_inner}, d_state)")
    d_state = A.shape[1]
    for name, x in (("delta", delta), ("z", z)):
        if x is not None and x.shape != u.shape:
            raise error(name, x, f"{tuple(u.shape)} like u")
    for name, x in (("B", B), ("C", C)):
        if x.ndim != 4 or x.shape[:2] != (batch, length) or x.shape[3] != d_state:
            raise error(name, x, f"({batch}, {length}, groups, {d_state})")
    if C.shape != B.shape or d_inner % B.shape[2]:
        raise ValueError(f"B has shape {tuple(B.shape)} and C {tuple(C.shape)}, expected the same "
                         f"number of groups, dividing the {d_inner} channels")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None and x.shape != (d_inner,):
            raise error(name, x, f"({d_inner},)")
    if initial_state is not None and initial_state.shape != (batch, d_inner, d_state):
        raise error("initial_state", initial_state, f"({batch}, {d_inner}, {d_state})")
    if reset is not None:
        if reset.shape != (batch, length):
            raise error("reset", reset, f"({batch}, {length})")
        if not (jnp.issubdtype(reset.dtype, jnp.integer) or reset.dtype == jnp.bool_):
            raise ValueError(f"reset has dtype {reset.dtype}, expected bool or an integer dtype")
