"""The sequence-mixer protocol that every mixer of ``ssmjax.nn`` meets, and the checks they
share.

A sequence mixer maps ``(batch, length, d_model)`` to the same shape::

    y, cache = mixer(x, mask=None, segment_ids=None, cache=None, return_cache=False)
    cache = mixer.init_cache(batch_size, dtype=None)     # causal mixers only
    y_t, cache = mixer.step(x_t, cache, **hooks)         # causal mixers only

* The call always returns a pair; ``cache`` is ``None`` unless ``return_cache``.
* ``causal``: the output at t depends on inputs up to t only, and the mixer has a recurrent
  form (``init_cache``, ``step``, ``cache`` to continue a sequence, ``return_cache`` for a
  parallel prefill). A mixer that is not causal (a bidirectional LTI layer, SeRpEnt) refuses
  all four with a ``ValueError``.
* ``mask: (b, l)`` bool, True = valid, padding at the end of each row (a row's valid part is
  the run of True before its first False; a later True counts as padding). Padded positions
  never influence a valid position's output, and outputs at padded positions are zero. With
  ``return_cache`` the cache is the state after each row's last valid position, so prompts of
  different lengths are prefilled in one call.
* ``segment_ids: (b, l)`` int marks packed documents; no mixer supports them yet, and every
  one refuses them through :func:`refuse_segment_ids`.
* ``hooks`` are keyword options of ``step`` particular to a mixer (MambaMixer's
  ``state_update``, S4's and Liquid-S4's ``recurrence``); blocks around a mixer pass them on.

The mixers: ``MambaMixer`` (gated or not), ``NoGateBlock``, ``S4``, ``LiquidS4``, ``S4D``,
``S5`` (causal or bidirectional), ``SeRpEntBlock`` (not causal), and ``ResidualBlock``
around any of them.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypeAlias, overload, runtime_checkable

import jax
import jax.numpy as jnp

from ssmjax.ops.resample import lengths_from_mask, valid_mask

Cache: TypeAlias = Any
"""A mixer's recurrent state: a pytree (``MambaCache``, ``NoGateCache``, ``LTICache``, or a
list of them for a model) whose every array leads with the batch axis, so that rows can be
selected, and batches joined, array by array."""


@runtime_checkable
class SequenceMixer(Protocol):
    """``(b, l, d_model) → (b, l, d_model)`` with the semantics of the module docstring."""

    d_model: int
    causal: bool

    @overload
    def __call__(self, x: jax.Array, /, *, mask: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: Cache | None = None,
                 return_cache: Literal[False] = False) -> tuple[jax.Array, None]: ...

    @overload
    def __call__(self, x: jax.Array, /, *, mask: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: Cache | None = None,
                 return_cache: Literal[True]) -> tuple[jax.Array, Cache]: ...

    def __call__(self, x: jax.Array, /, *, mask: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: Cache | None = None,
                 return_cache: bool = False) -> tuple[jax.Array, Cache | None]:
        """``x: (b, l, d_model)`` → ``(y (b, l, d_model), cache or None)``."""
        ...

    def init_cache(self, batch_size: int, dtype: jnp.dtype | None = None) -> Cache:
        """The zero state of ``batch_size`` sequences."""
        ...

    def step(self, x_t: jax.Array, cache: Cache, /, **hooks: Any) -> tuple[jax.Array, Cache]:
        """One position: ``x_t: (b, d_model)`` → ``(y_t (b, d_model), next cache)``."""
        ...


def cache_batch_size(cache: Cache) -> int:
    """The batch of a cache: the leading size of its arrays."""
    leaves = jax.tree.leaves(cache)
    if not leaves:
        raise ValueError("cache holds no arrays, expected a mixer's recurrent state")
    return leaves[0].shape[0]


def refuse_segment_ids(segment_ids: jax.Array | None) -> None:
    """``ValueError`` unless ``segment_ids`` is None: no mixer packs documents yet."""
    if segment_ids is not None:
        raise ValueError(f"segment_ids has shape {tuple(jnp.shape(segment_ids))}, expected None: "
                         "the mixers do not support packed sequences yet; put one document in "
                         "each row and mark the padding with mask")


def check_sequence(hidden: jax.Array, d_model: int, name: str = "hidden") -> None:
    """``ValueError`` unless ``hidden`` is ``(batch, length, d_model)``."""
    if hidden.ndim != 3 or hidden.shape[-1] != d_model:
        raise ValueError(f"{name} has shape {tuple(hidden.shape)}, expected (batch, length, {d_model})")


def check_step_input(hidden_t: jax.Array, d_model: int) -> None:
    """``ValueError`` unless ``hidden_t`` is ``(batch, d_model)``."""
    if hidden_t.ndim != 2 or hidden_t.shape[-1] != d_model:
        raise ValueError(f"hidden_t has shape {tuple(hidden_t.shape)}, expected (batch, {d_model})")


def not_causal(what: str, mixer: object, why: str) -> ValueError:
    """The error for ``what`` (``"step"``, ``"cache"``, ...) of a mixer that is not causal."""
    return ValueError(f"{what} needs a causal mixer with a recurrent form; this "
                      f"{type(mixer).__name__} is not causal: {why}")


def check_causal(causal: bool, what: str, mixer: object, why: str) -> None:
    """:func:`not_causal` raised unless ``causal``."""
    if not causal:
        raise not_causal(what, mixer, why)


def sequence_lengths(mask: jax.Array | None, hidden: jax.Array) -> jax.Array | None:
    """Each row's valid length ``(b,)`` int32 from ``mask: (b, l)`` bool (None: no mask)."""
    if mask is None:
        return None
    if jnp.shape(mask) != hidden.shape[:2] or mask.dtype != jnp.bool_:
        raise ValueError(f"mask has shape {tuple(jnp.shape(mask))} and dtype {mask.dtype}, expected "
                         f"bool (batch, length) = {tuple(hidden.shape[:2])} for hidden of shape "
                         f"{tuple(hidden.shape)}")
    return lengths_from_mask(mask, *hidden.shape[:2])


def check_call(mixer: SequenceMixer, hidden: jax.Array, *, mask: jax.Array | None,
               segment_ids: jax.Array | None, cache: Cache | None, return_cache: bool,
               why_not_causal: str = "") -> jax.Array | None:
    """The checks of a sequence call: shape of ``hidden``, ``segment_ids`` refused, caches
    only for causal mixers, ``mask``. Returns the valid lengths ``(b,)`` (None: no mask)."""
    check_sequence(hidden, mixer.d_model)
    refuse_segment_ids(segment_ids)
    if cache is not None or return_cache:
        check_causal(mixer.causal, "cache" if cache is not None else "return_cache", mixer,
                     why_not_causal)
    return sequence_lengths(mask, hidden)


def zero_padding(x: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """``x: (b, l, ...)`` with the positions past each row's length set to zero."""
    if lengths is None:
        return x
    keep = valid_mask(lengths, x.shape[1]).reshape(*x.shape[:2], *(1,) * (x.ndim - 2))
    return jnp.where(keep, x, jnp.zeros((), x.dtype))
