"""Metadata carried by parameters: logical axis names and the optimiser group.

Each parameter names the role of each of its axes (``"embed"``, ``"inner"``, ``"vocab"``,
``"state"``, or ``None``); ``ssmjax.train.sharding`` maps those names onto the axes of a
device mesh with the training config's rule table, so models never mention a mesh.

Each parameter also names its optimiser group, which ``ssmjax.train.optim`` reads (never a
parameter's name or rank):

    "decay"      weight matrices and embeddings: AdamW with weight decay
    "no_decay"   biases, norm scales, skips D, Mamba's A_log and Δ bias: no weight decay
                 (mamba-ssm's ``_no_weight_decay``)
    "ssm"        the state-space parameters of the LTI layers (Λ or A, P, B, log Δ): their own,
                 lower learning rate and no weight decay, as the S4 and S5 LRA recipes
"""

from __future__ import annotations

LOGICAL_AXES = "logical_axes"
OPTIMIZER_GROUP = "optimizer_group"
OPTIMIZER_GROUPS = ("decay", "no_decay", "ssm")


def axes(*names: str | None, group: str = "decay") -> dict[str, object]:
    """Metadata of a parameter: the logical axes, one name (or ``None``) per axis, and its
    optimiser ``group`` (one of :data:`OPTIMIZER_GROUPS`)."""
    if group not in OPTIMIZER_GROUPS:
        raise ValueError(f"group is {group!r}, expected one of {OPTIMIZER_GROUPS}")
    return {LOGICAL_AXES: names, OPTIMIZER_GROUP: group}
