"""The selective scan's recurrence written out one time step at a time, in float64: what every
backend and kernel is checked against (and what to check a new kernel against).

Unlike :func:`ssmjax.ops.selective_scan`, whose state is float32 by contract, this keeps
everything in float64 and does nothing clever: the semantics of mamba-ssm's
``selective_scan_ref``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def selective_scan_reference(u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any = None,
                             z: Any = None, *, delta_bias: Any = None,
                             delta_softplus: bool = False, initial_state: Any = None,
                             segment_ids: Any = None, reset: Any = None,
                             xp: ModuleType = np) -> tuple[Any, Any]:
    """``h_t = exp(Δ_t A) h_{t−1} + Δ_t u_t B_t``, ``y_t = C_t · h_t + D u_t``, ``y ← y silu(z)``;
    ``exp(Δ_t A)`` is 0 where a segment starts.

    Args:
        u, delta: ``(b, l, d)``; ``delta_bias (d,)`` is added to ``delta`` and
            ``delta_softplus`` applies softplus to the sum, as mamba-ssm does.
        A: ``(d, n)``.
        B, C: ``(b, l, n)`` or grouped ``(b, l, g, n)`` (channel ``i`` reads group
            ``i // (d / g)``).
        D: ``(d,)`` or None; z: ``(b, l, d)`` or None; initial_state: ``(b, d, n)`` or None.
        segment_ids: ``(b, l)`` int or None: a segment starts at each t > 0 whose id differs
            from t − 1's (the convention of :mod:`ssmjax.ops.selective_scan`).
        reset: ``(b, l)`` bool or None, the kernels' form: a segment starts wherever it is
            True, t = 0 included (which drops ``initial_state``). At most one of the two.
        xp: ``numpy`` (a Python loop over time) or ``jax.numpy`` (a ``lax.scan`` over time: jit-
            and grad-able, float64 only under ``jax.enable_x64``, for reference gradients and
            long sequences).

    Returns:
        ``(y (b, l, d), final state (b, d, n))``, float64.
    """
    u, delta, A, B, C = (xp.asarray(x, xp.float64) for x in (u, delta, A, B, C))
    batch, length, channels = u.shape
    if segment_ids is not None and reset is not None:
        raise ValueError("segment_ids and reset are both given, expected at most one")
    if segment_ids is not None:
        segment_ids = xp.asarray(segment_ids)
        reset = xp.concatenate([xp.zeros((batch, 1), bool),
                                segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    reset = (xp.zeros((batch, length), bool) if reset is None
             else xp.asarray(reset).astype(bool))
    if B.ndim == 3:
        B, C = B[:, :, None], C[:, :, None]
    B = xp.repeat(B, channels // B.shape[2], axis=2)
    C = xp.repeat(C, channels // C.shape[2], axis=2)
    if delta_bias is not None:
        delta = delta + xp.asarray(delta_bias, xp.float64)
    if delta_softplus:
        delta = xp.logaddexp(0.0, delta)
    h = (xp.zeros((batch, channels, A.shape[1]), xp.float64) if initial_state is None
         else xp.asarray(initial_state, xp.float64))

    def step(h, u_t, delta_t, B_t, C_t, reset_t):
        decay = xp.where(reset_t[:, None, None], 0.0, xp.exp(delta_t[..., None] * A))
        h = decay * h + (delta_t * u_t)[..., None] * B_t
        return h, xp.sum(h * C_t, axis=-1)

    if xp is np:
        ys = []
        for t in range(length):
            h, y_t = step(h, u[:, t], delta[:, t], B[:, t], C[:, t], reset[:, t])
            ys.append(y_t)
        y = np.stack(ys, axis=1)
    else:
        import jax

        h, y = jax.lax.scan(lambda h, xs: step(h, *xs), h,
                            tuple(xp.moveaxis(x, 1, 0) for x in (u, delta, B, C, reset)))
        y = xp.moveaxis(y, 0, 1)
    if D is not None:
        y = y + xp.asarray(D, xp.float64) * u
    if z is not None:
        z = xp.asarray(z, xp.float64)
        y = y * z / (1.0 + xp.exp(-z))
    return y, h
