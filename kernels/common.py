"""What the Pallas kernels share: the Triton lowering (and whether this jax has it), when a
kernel runs in interpret mode, and the softplus threshold.

The GPU kernels lower through Pallas' Triton backend, which jax 0.11 deprecates in favour of
Mosaic GPU and a later jax may not ship. :func:`triton_lowering` is the one place that asks
whether it is there; ``ssmjax.ops.selective_scan`` falls back to an XLA scan without it.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType

import jax

__all__ = ["SOFTPLUS_LINEAR_ABOVE", "TRITON_DEPRECATION_MESSAGE", "TRITON_LOWERING",
           "interpret_by_default", "require_triton_lowering", "show_triton_deprecation_once",
           "triton_lowering"]

# softplus(x) == x to float32 precision beyond this (the threshold mamba-ssm uses).
SOFTPLUS_LINEAR_ABOVE = 20.0

TRITON_LOWERING = "jax.experimental.pallas.triton"
# What the GPU kernels take from it.
_TRITON_NAMES = ("CompilerParams", "store", "elementwise_inline_asm")
# jax 0.11 warns with this (a DeprecationWarning) every time a kernel lowers through Triton.
TRITON_DEPRECATION_MESSAGE = "The Pallas Triton backend is deprecated"


@functools.cache
def triton_lowering() -> ModuleType | None:
    """Pallas' Triton module with everything the GPU kernels use, or None if this jax lacks it."""
    try:
        module = importlib.import_module(TRITON_LOWERING)
    except ImportError:
        return None
    return module if all(hasattr(module, name) for name in _TRITON_NAMES) else None


def require_triton_lowering(caller: str, instead: str = "") -> ModuleType:
    """:func:`triton_lowering`, or a ``RuntimeError`` saying that ``caller`` needs it.

    ``instead`` ends the message with what to use without it.
    """
    module = triton_lowering()
    if module is None:
        raise RuntimeError(
            f"{caller} needs Pallas' Triton lowering ({TRITON_LOWERING} with "
            f"{', '.join(_TRITON_NAMES)}), which jax {jax.__version__} does not provide"
            + (f"; {instead}" if instead else ""))
    return module


def show_triton_deprecation_once() -> None:
    """Shows jax's deprecation of the Triton lowering once per process, not once per kernel
    compiled (every jit of a model compiles several)."""
    warnings.filterwarnings("once", message=TRITON_DEPRECATION_MESSAGE, category=DeprecationWarning)


show_triton_deprecation_once()


def interpret_by_default(interpret: bool | None, platform: str = "gpu") -> bool:
    """``interpret`` when given; else True unless jax's default platform is ``platform``.

    Pallas compiles a kernel only for the platform it is written for; anywhere else it runs in
    interpret mode (slow, exact: what the CPU tests use).
    """
    return jax.default_backend() != platform if interpret is None else bool(interpret)
