"""Packed rows for the segment tests, and the float64 reference of a packed scan: every segment
run alone (its own sequence, from zero state, or from the row's initial state if it is first).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssmjax.ops.reference import selective_scan_reference

# Pre-softplus Δ of a padded step of a segment run alone: softplus(−1e4) is 0 in float64, so
# the step is the identity on the state and its final state is the segment's.
_IDENTITY_DELTA = -1e4
SEQUENCES = ("u", "delta", "B", "C", "z")


def ids_from_lengths(lengths, ids=None) -> np.ndarray:
    """One row of segment ids: segment i has ``lengths[i]`` positions and id ``ids[i]``
    (1, 2, 3, ... when not given)."""
    ids = range(1, len(lengths) + 1) if ids is None else ids
    return np.concatenate([np.full(n, i) for n, i in zip(lengths, ids)])


def random_short_lengths(rng: np.random.Generator, length: int, longest: int = 3) -> list[int]:
    """Segment lengths 1..``longest`` drawn until they fill ``length``."""
    lengths = []
    while sum(lengths) < length:
        lengths.append(int(min(rng.integers(1, longest + 1), length - sum(lengths))))
    return lengths


def packings(rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
    """``(3, length)`` segment ids per layout; each row is a different way to pack a row."""
    third = length // 3
    return {
        # many short segments (length 1 among them); one long document then padding (id 0);
        # boundaries at multiples of length / 3 (chunk boundaries when that is the chunk).
        "short-long-aligned": np.stack([
            ids_from_lengths(random_short_lengths(rng, length)),
            ids_from_lengths([length - 5, 5], ids=[1, 0]),
            ids_from_lengths([third, third, length - 2 * third], ids=[3, 1, 2]),
        ]),
        # every position its own segment (ids alternate); left padding then one document;
        # a single segment (no reset).
        "unit-padded-single": np.stack([
            np.arange(length) % 2,
            ids_from_lengths([3, length - 3], ids=[0, 1]),
            np.full(length, 7),
        ]),
    }


def segment_spans(segment_ids: np.ndarray) -> list[tuple[int, int, int]]:
    """``(row, start, end)`` of every segment, row by row, in order."""
    spans = []
    for row, ids in enumerate(np.asarray(segment_ids)):
        starts = [0] + [t for t in range(1, len(ids)) if ids[t] != ids[t - 1]]
        spans += [(row, s, e) for s, e in zip(starts, starts[1:] + [len(ids)])]
    return spans


def scan_segments_alone(inputs: dict, segment_ids: np.ndarray, weights: tuple):
    """The float64 reference of a packed scan (with ``delta_softplus``), from the segments run
    alone.

    ``inputs`` are the packed arguments of ``selective_scan`` (``(b, l, ...)`` sequences);
    ``weights = (w_y (b, l, d), w_h (b, d, n))``. The segments become the rows of one batch
    (padded at the end with identity steps) for :func:`selective_scan_reference`.

    Returns:
        ``(y, final_state, grads)`` in the packed layout, float64: ``final_state`` is each row's
        last segment's, ``grads`` the gradients of ``Σ w_y·y + Σ w_h·final_state`` with respect
        to every input.
    """
    spans = segment_spans(segment_ids)
    count, longest = len(spans), max(e - s for _, s, e in spans)
    batch = segment_ids.shape[0]
    first = {row: i for i, (row, _, _) in reversed(list(enumerate(spans)))}
    last = {row: i for i, (row, _, _) in enumerate(spans)}
    w_y, w_h = (np.asarray(w, np.float64) for w in weights)

    def alone(x, fill=0.0):
        out = np.full((count, longest) + x.shape[2:], fill)
        for i, (row, s, e) in enumerate(spans):
            out[i, :e - s] = x[row, s:e]
        return out

    packed = {k: None if v is None else np.asarray(v, np.float64) for k, v in inputs.items()}
    segments = {k: alone(packed[k], _IDENTITY_DELTA if k == "delta" else 0.0)
                for k in SEQUENCES if packed[k] is not None}
    segments.update({k: packed[k] for k in ("A", "D", "delta_bias") if packed[k] is not None})
    h0 = packed["initial_state"]
    if h0 is not None:
        segments["initial_state"] = np.stack([h0[row] if first[row] == i else np.zeros_like(h0[0])
                                              for i, (row, _, _) in enumerate(spans)])
    w_y_alone = alone(w_y)
    w_h_alone = np.stack([w_h[row] if last[row] == i else np.zeros_like(w_h[0])
                          for i, (row, _, _) in enumerate(spans)])

    with jax.enable_x64(True):
        def loss(x):
            y, h = selective_scan_reference(**x, delta_softplus=True, xp=jnp)
            return jnp.sum(y * w_y_alone) + jnp.sum(h * w_h_alone), (y, h)

        args = {k: jnp.asarray(v) for k, v in segments.items()}
        g, (y, h) = jax.jit(jax.grad(loss, has_aux=True))(args)
        g, y, h = ({k: np.asarray(v) for k, v in g.items()}, np.asarray(y), np.asarray(h))

    y_packed = np.zeros(packed["u"].shape)
    grads = {k: np.zeros(packed[k].shape) for k in segments}
    for i, (row, s, e) in enumerate(spans):
        y_packed[row, s:e] = y[i, :e - s]
        for k in SEQUENCES:
            if k in g:
                grads[k][row, s:e] = g[k][i, :e - s]
    for k in ("A", "D", "delta_bias"):
        if k in g:
            grads[k] = g[k]
    if "initial_state" in g:
        grads["initial_state"] = np.stack([g["initial_state"][first[row]] for row in range(batch)])
    final_state = np.stack([h[last[row]] for row in range(batch)])
    return y_packed, final_state, grads
