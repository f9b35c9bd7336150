"""Pallas kernel: one step of the selective SSM (Mamba's decode-time state update).

::

    Δ   = softplus(Δ + Δ_bias)                          (b, d)
    h   = exp(Δ A) ⊙ h + (Δ u) ⊗ B                      (b, d, n), float32
    y   = (h · C + D u) · SiLU(z)                       (b, d)

in one kernel that reads ``h`` once and writes it in place (the state input is aliased to the
state output). Lowered through Pallas' Triton backend on GPU; interpret mode elsewhere.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .common import SOFTPLUS_LINEAR_ABOVE, require_triton_lowering


def _state_update_kernel(state_ref, u_ref, delta_ref, z_ref, B_ref, C_ref, A_ref, D_ref,
                         delta_bias_ref, y_ref, new_state_ref):
    """One program: ``block_d`` channels of one batch row."""
    delta = delta_ref[...].astype(jnp.float32) + delta_bias_ref[...].astype(jnp.float32)
    delta = jnp.where(delta > SOFTPLUS_LINEAR_ABOVE, delta, jnp.log1p(jnp.exp(delta)))
    u = u_ref[...].astype(jnp.float32)
    decay = jnp.exp(delta[:, None] * A_ref[...].astype(jnp.float32))          # (block_d, n)
    h = decay * state_ref[...] + (delta * u)[:, None] * B_ref[...].astype(jnp.float32)[None, :]
    y = jnp.sum(h * C_ref[...].astype(jnp.float32)[None, :], axis=1)
    y = y + D_ref[...].astype(jnp.float32) * u
    z = z_ref[...].astype(jnp.float32)
    y = y * z * jax.nn.sigmoid(z)
    y_ref[...] = y.astype(y_ref.dtype)
    new_state_ref[...] = h


def _block_channels(channels: int) -> int | None:
    """The largest power of two ≤ 256 dividing ``channels`` (Triton blocks are powers of two)."""
    for block in (256, 128, 64, 32, 16):
        if channels % block == 0:
            return block
    return None


@functools.partial(jax.jit, static_argnames=("interpret",))
def selective_state_update(state: jax.Array, u: jax.Array, delta: jax.Array, A: jax.Array,
                           B: jax.Array, C: jax.Array, D: jax.Array, z: jax.Array,
                           delta_bias: jax.Array, *, interpret: bool = False):
    """One fused step of the selective SSM with softplus on ``delta + delta_bias``.

    Args:
        state: ``(b, d, n)`` float32, h_{t-1} (updated in place when the caller donates it).
        u, delta, z: ``(b, d)``.
        A: ``(d, n)``; B, C: ``(b, n)``; D, delta_bias: ``(d,)``.
        interpret: run in Pallas interpret mode (any platform; for tests).

    Returns:
        ``(y (b, d) in u.dtype, state (b, d, n) float32)``, as
        ``selective_scan_step(..., delta_softplus=True)``.
    """
    batch, channels, n = state.shape
    expected = {"u": (batch, channels), "delta": (batch, channels), "z": (batch, channels),
                "A": (channels, n), "B": (batch, n), "C": (batch, n), "D": (channels,),
                "delta_bias": (channels,)}
    given = {"u": u, "delta": delta, "z": z, "A": A, "B": B, "C": C, "D": D, "delta_bias": delta_bias}
    for name, shape in expected.items():
        if given[name].shape != shape:
            raise ValueError(f"{name} has shape {tuple(given[name].shape)}, expected {shape} "
                             f"for state of shape {tuple(state.shape)}")
    block = _block_channels(channels)
    if block is None or n & (n - 1):
        raise ValueError(f"state has shape {tuple(state.shape)}: the fused step needs d_inner "
                         "divisible by 16 and a power-of-two d_state")
    grid = (batch, channels // block)
    row_channels = pl.BlockSpec((pl.Squeezed(), block), lambda b, j: (b, j))
    row_state = pl.BlockSpec((pl.Squeezed(), n), lambda b, j: (b, 0))
    channel_vector = pl.BlockSpec((block,), lambda b, j: (j,))
    state_tile = pl.BlockSpec((pl.Squeezed(), block, n), lambda b, j: (b, j, 0))
    compiler_params = None
    if not interpret:  # interpret mode runs without the Triton lowering
        pallas_triton = require_triton_lowering("ssmjax.kernels.selective_state_update",
                                                "decode with MambaLM.step instead")
        compiler_params = pallas_triton.CompilerParams(num_warps=4, num_stages=1)
    y, new_state = pl.pallas_call(
        _state_update_kernel,
        grid=grid,
        in_specs=[state_tile, row_channels, row_channels, row_channels, row_state, row_state,
                  pl.BlockSpec((block, n), lambda b, j: (j, 0)), channel_vector, channel_vector],
        out_specs=[row_channels, state_tile],
        out_shape=[jax.ShapeDtypeStruct((batch, channels), u.dtype),
                   jax.ShapeDtypeStruct((batch, channels, n), jnp.float32)],
        input_output_aliases={0: 1},
        compiler_params=compiler_params,
        interpret=interpret,
    )(state.astype(jnp.float32), u, delta, z, B, C, A.astype(jnp.float32), D, delta_bias)
    return y, new_state
