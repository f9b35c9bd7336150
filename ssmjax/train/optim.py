"""AdamW with the papers' schedules, gradient clipping and optimiser groups from parameter metadata.

Every parameter names its group in its metadata (``ssmjax.nn.partitioning``): ``"decay"``
(weight matrices, embeddings: AdamW with weight decay), ``"no_decay"`` (biases, norms, D,
A_log, the Δ bias: no weight decay, as mamba-ssm) and ``"ssm"`` (the LTI layers' state-space
parameters: no weight decay and ``ssm_learning_rate``, as the S4 and S5 LRA recipes). The
groups are read from the metadata, never guessed from a parameter's name or rank.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ssmjax.nn.partitioning import OPTIMIZER_GROUP, OPTIMIZER_GROUPS

SCHEDULES = ("cosine", "constant", "plateau")
UNMARKED_GROUP = "decay"

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW hyper-parameters; defaults follow Mamba's language-model recipe.

    ``schedule``: ``"cosine"`` (linear warmup then cosine decay to ``min_lr_ratio``),
    ``"constant"`` (warmup then flat), or ``"plateau"`` (warmup then flat, scaled by
    ``optax.contrib.reduce_on_plateau`` on the training loss, as in the LRA recipes).
    ``ssm_learning_rate``: the peak learning rate of the ``"ssm"`` group, on the same schedule
    (``None``: ``learning_rate``).
    """

    learning_rate: float = 1e-3
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    grad_clip_norm: float = 1.0
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    plateau_accumulation: int = 50
    ssm_learning_rate: float | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule is {self.schedule!r}, expected one of {SCHEDULES}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate is {self.learning_rate}, expected > 0")
        if self.ssm_learning_rate is not None and self.ssm_learning_rate <= 0:
            raise ValueError(f"ssm_learning_rate is {self.ssm_learning_rate}, expected > 0 or None")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps is {self.warmup_steps}, expected >= 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay is {self.weight_decay}, expected >= 0")


def learning_rate_schedule(config: OptimizerConfig, total_steps: int,
                           peak: float | None = None) -> optax.Schedule:
    """Warmup to ``peak`` (default ``config.learning_rate``), then cosine decay or flat, over
    ``total_steps``."""
    peak = config.learning_rate if peak is None else peak
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1),
                                                  end_value=peak * config.min_lr_ratio)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)],
                                [warmup])


def _path_key(path: tuple) -> tuple:
    """A parameter's path as the keys of ``nnx.to_flat_state``, from a JAX tree path of either
    form optax sees: ``nnx.State`` of Variables (``tx.init``: a ``.value`` after the name) or of
    plain arrays (``tx.update``)."""
    keys = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            keys.append(entry.key)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            keys.append(entry.idx)
        elif isinstance(entry, jax.tree_util.GetAttrKey) and entry.name != "value":
            keys.append(entry.name)
    return tuple(keys)


def parameter_groups(model: nnx.Module) -> dict[tuple, str]:
    """``{parameter path: optimiser group}`` from each parameter's ``optimizer_group`` metadata.

    A parameter without one is put in ``"decay"``; the paths of all such parameters are logged
    in one warning.
    """
    groups, unmarked = {}, []
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        group = variable.get_metadata().get(OPTIMIZER_GROUP)
        if group is None:
            unmarked.append("/".join(str(part) for part in path))
            group = UNMARKED_GROUP
        elif group not in OPTIMIZER_GROUPS:
            raise ValueError(f"parameter {'/'.join(map(str, path))} has optimizer_group "
                             f"{group!r}, expected one of {OPTIMIZER_GROUPS}")
        groups[tuple(path)] = group
    if unmarked:
        log.warning("%d parameters have no optimizer_group metadata and get weight decay as "
                    "'%s': %s", len(unmarked), UNMARKED_GROUP, ", ".join(unmarked))
    return groups


def _labels(groups: Mapping[tuple, str]):
    def label(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(lambda path, _: groups[_path_key(path)], params)

    return label


def scale_by_group_learning_rate(schedules: Mapping[str, optax.Schedule],
                                 label: Callable[[Any], Any]) -> optax.GradientTransformation:
    """``update ← −rate_g(count) · update`` for each parameter of group ``g = label(...)``.

    One step count for every group, held as :func:`optax.scale_by_learning_rate` holds it
    (``ScaleByScheduleState``), so the state is that of a single learning rate.
    """

    def init(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        rates = {group: schedule(state.count) for group, schedule in schedules.items()}
        updates = jax.tree.map(lambda u, group: -jnp.asarray(rates[group], u.dtype) * u,
                               updates, label(updates))
        return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def make_optimizer(config: OptimizerConfig, total_steps: int,
                   model: nnx.Module) -> optax.GradientTransformationExtraArgs:
    """Clip by global norm → AdamW per optimiser group of ``model``'s parameters [→ reduce on
    plateau].

    ``"decay"``: ``learning_rate`` and ``weight_decay``; ``"no_decay"``: ``learning_rate``, no
    decay; ``"ssm"``: ``ssm_learning_rate`` (default ``learning_rate``), no decay; every group
    on the same schedule. With ``schedule="plateau"`` the update takes the loss as ``value=``.
    """
    label = _labels(parameter_groups(model))
    rates = {"decay": learning_rate_schedule(config, total_steps),
             "no_decay": learning_rate_schedule(config, total_steps),
             "ssm": learning_rate_schedule(config, total_steps, config.ssm_learning_rate)}
    # AdamW is Adam's scaling, then decayed weights, then the learning rate: one Adam state for
    # all parameters, the decay masked to its group, the rate chosen per group — nested as
    # optax.adamw nests them, so that the optimiser state keeps optax.adamw's layout and
    # checkpoints written before the groups existed still resume.
    adamw = optax.chain(
        optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps),
        optax.add_decayed_weights(config.weight_decay, mask=lambda params: jax.tree.map(
            lambda group: group == "decay", label(params))),
        scale_by_group_learning_rate(rates, label))
    parts = [optax.clip_by_global_norm(config.grad_clip_norm), adamw]
    if config.schedule == "plateau":
        parts.append(optax.contrib.reduce_on_plateau(
            factor=config.plateau_factor, patience=config.plateau_patience,
            accumulation_size=config.plateau_accumulation))
    return optax.chain(*parts)
