"""Long convolution by FFT, causal and anticausal kernels (the convolutional view of every
LTI layer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssmjax.ops.checks import shape_error
from ssmjax.ops.lti.common import _real_dtype


def fft_conv(u: jax.Array, causal_kernel: jax.Array | None = None,
             anticausal_kernel: jax.Array | None = None) -> jax.Array:
    """Long convolution by FFT, one kernel per channel::

        y_t = Σ_{s≤t} K_{t−s} u_s  +  Σ_{s>t} K^←_{s−t−1} u_s

    The second sum is the backward direction of a bidirectional layer: an SSM run on the
    time-reversed sequence, shifted by one step so that ``u_t`` is counted once (by the
    forward kernel). Padding to ``2L`` makes the circular convolution a linear one.

    Args:
        u: ``(b, L, h)``, or ``(m, b, L, h)`` to sum the convolutions of m inputs with m kernels.
        causal_kernel, anticausal_kernel: ``(h, ≥L)`` or ``(m, h, ≥L)``; only the first L taps
            are used. At least one must be given.

    Returns:
        ``y``: ``(b, L, h)`` in float32 (float64 for float64 inputs).
    """
    if causal_kernel is None and anticausal_kernel is None:
        raise ValueError("causal_kernel and anticausal_kernel are both None, expected at least one")
    if u.ndim not in (3, 4):
        raise shape_error("u", u.shape, "(batch, length, channels) or (m, batch, length, channels)")
    length, channels = u.shape[-2:]
    dtype = _real_dtype(u, *(k for k in (causal_kernel, anticausal_kernel) if k is not None))
    taps = jnp.zeros((*u.shape[:-3], channels, 2 * length), dtype)
    for name, kernel in (("causal_kernel", causal_kernel), ("anticausal_kernel", anticausal_kernel)):
        if kernel is None:
            continue
        if kernel.shape[:-1] != (*u.shape[:-3], channels) or kernel.shape[-1] < length:
            leading = "".join(f"{size}, " for size in (*u.shape[:-3], channels))
            raise shape_error(name, kernel.shape, f"({leading}≥{length})")
        kernel = kernel[..., :length].astype(dtype)
        if name == "causal_kernel":
            taps = taps.at[..., :length].add(kernel)
        else:  # K^←_i sits at circular lag −(i + 1), i.e. index 2L − 1 − i
            taps = taps.at[..., length + 1:].add(kernel[..., :length - 1][..., ::-1])
    u_f = jnp.fft.rfft(u.astype(dtype), n=2 * length, axis=-2)
    k_f = jnp.swapaxes(jnp.fft.rfft(taps, axis=-1), -1, -2)
    y_f = u_f * k_f[..., None, :, :]
    if u.ndim == 4:
        y_f = y_f.sum(0)
    return jnp.fft.irfft(y_f, n=2 * length, axis=-2)[..., :length, :]
