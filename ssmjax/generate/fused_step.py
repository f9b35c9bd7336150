"""Mamba's decode step with the selective-state update as one Pallas kernel.

Per layer and token, the SSM update of the decode step is a few XLA fusions plus a batched
contraction; :func:`ssmjax.kernels.selective_state_update` does it in one kernel. Whether that
pays is measured by ``experiments/benchmarks/generation.py`` and recorded in
:data:`FUSED_STEP_PAYS`, which ``decode_backend="auto"`` follows. On an H100 it did not: XLA
already fuses the update, and the Pallas call's own launch cost more than it saved (11-16%
slower per token for a 130M model at batch 1, 16 and 64; experiments/results/generation_h100.json).
"""

from __future__ import annotations

import functools

import jax

from ssmjax.kernels import selective_state_update
from ssmjax.models import MambaLM
from ssmjax.nn import MambaCache, MambaMixer
from ssmjax.nn.protocols import Cache

# Platforms on which the fused step beat ``MambaLM.step`` in
# experiments/results/generation_<gpu>.json (decode tokens/s at every measured batch size).
# GPU (H100): 0.92 vs 0.80 ms/token at batch 1, 1.11 vs 0.97 at batch 64, so not.
FUSED_STEP_PAYS: dict[str, bool] = {"cpu": False, "gpu": False}


def fused_step_pays_on(platform: str) -> bool:
    """Whether ``decode_backend="auto"`` picks the fused step on ``platform``."""
    return FUSED_STEP_PAYS.get(platform, False)


def _interpret_by_default(interpret: bool | None) -> bool:
    from ssmjax.kernels.common import interpret_by_default

    return interpret_by_default(interpret)


def _fused_update(interpret: bool | None):
    return functools.partial(selective_state_update, interpret=_interpret_by_default(interpret))


def _check_fusable(mixer) -> None:
    """``ValueError`` unless ``mixer`` is a gated MambaMixer, the one the fused update fits."""
    if not isinstance(mixer, MambaMixer) or not mixer.gated:
        raise ValueError(f"mixer is {type(mixer).__name__}"
                         f"{'' if getattr(mixer, 'gated', True) else ' (gated=False)'}, expected a "
                         "gated MambaMixer: the fused update applies the SiLU(z) gate")


def mixer_step(mixer: MambaMixer, hidden_t: jax.Array, cache: MambaCache, *,
               interpret: bool | None = None) -> tuple[jax.Array, MambaCache]:
    """``MambaMixer.step`` with the SSM update fused: ``(b, d_model) → (b, d_model)``."""
    _check_fusable(mixer)
    return mixer.step(hidden_t, cache, state_update=_fused_update(interpret))


def model_step(model: MambaLM, input_ids_t: jax.Array, cache: list[Cache], *,
               interpret: bool | None = None) -> tuple[jax.Array, list[Cache]]:
    """``MambaLM.step`` with the fused SSM update: ``(b,)`` ids → ``(b, vocab_size)`` logits."""
    for layer in model.layers:
        _check_fusable(getattr(layer, "mixer", layer))
    return model.step(input_ids_t, cache, state_update=_fused_update(interpret))
