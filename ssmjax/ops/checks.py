"""Argument checks shared by the ops: each raises a ``ValueError`` naming the argument, what it
received and what was expected."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def shape_error(name: str, got: Sequence[int], expected: str) -> ValueError:
    """``ValueError("{name} has shape {got}, expected {expected}")``."""
    return ValueError(f"{name} has shape {tuple(got)}, expected {expected}")


def check_floating(name: str, x: jax.Array) -> None:
    """Raises unless ``x`` has a floating dtype."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} has dtype {x.dtype}, expected a floating dtype (float32, bfloat16, float16)")
