"""Metadata carried by parameters: logical axis names, the optimiser group and the initialiser.

Each parameter names the role of each of its axes (``"embed"``, ``"inner"``, ``"vocab"``,
``"state"``, or ``None``); ``ssmjax.train.sharding`` maps those names onto the axes of a
device mesh with the training config's rule table, so models never mention a mesh.

Each parameter also names its optimiser group, which ``ssmjax.train.optim`` reads (never a
parameter's name or rank). Every module chooses the group of every parameter it creates:

    "decay"      weight matrices, conv weights and embeddings: AdamW with weight decay
    "no_decay"   biases, norm scales and biases, skips D, Mamba's A_log and Δ bias: no weight
                 decay (mamba-ssm's ``_no_weight_decay``)
    "ssm"        the state-space parameters of the LTI layers (Λ, P, B, log Δ): their own,
                 lower learning rate and no weight decay, as the S4 and S5 LRA recipes

And each parameter keeps the :class:`~ssmjax.nn.initializers.Initializer` that drew it, so
that ``ssmjax.convert.random_params`` can draw a whole model's parameters on the host from
the modules' own distributions.
"""

from __future__ import annotations

from typing import Any

LOGICAL_AXES = "logical_axes"
OPTIMIZER_GROUP = "optimizer_group"
INITIALIZER = "initializer"
OPTIMIZER_GROUPS = ("decay", "no_decay", "ssm")


def axes(*names: str | None, group: str, init: Any = None) -> dict[str, object]:
    """Metadata of a parameter: the logical axes, one name (or ``None``) per axis, its
    optimiser ``group`` (one of :data:`OPTIMIZER_GROUPS`) and, when given, the
    :class:`~ssmjax.nn.initializers.Initializer` ``init`` that drew its initial value."""
    if group not in OPTIMIZER_GROUPS:
        raise ValueError(f"group is {group!r}, expected one of {OPTIMIZER_GROUPS}")
    metadata: dict[str, object] = {LOGICAL_AXES: names, OPTIMIZER_GROUP: group}
    if init is not None:
        metadata[INITIALIZER] = init
    return metadata
