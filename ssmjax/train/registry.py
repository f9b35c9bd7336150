"""Which model a model config builds, and the objective it is trained with.

The training loop never names a model class: it looks the experiment's model config up here
by its type. A new kind of model plugs in with one registration::

    register_model(MambaConfig, build=MambaLM, objective=TOKEN, check=check_mamba_task)

``build(config, rngs=nnx.Rngs(...))`` constructs the module; ``objective`` is one of
``ssmjax.train.objectives`` (what batches it reads and how it calls the model); ``check(config,
task)``, when given, raises ``ValueError`` when the model cannot take the task's data.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ssmjax.models import MambaConfig, MambaLM
from ssmjax.train.objectives import TOKEN, Objective


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model config type: how to build its model, its objective, its task check."""

    config_type: type
    build: Callable[..., Any]
    objective: Objective
    check: Callable[[Any, Any], None] | None = None


_MODELS: dict[type, ModelEntry] = {}

ModelConfig = Any
"""What an experiment's ``model`` is: an instance of a config type given to :func:`register_model`."""


def register_model(config_type: type, *, build: Callable[..., Any], objective: Objective,
                   check: Callable[[Any, Any], None] | None = None) -> None:
    """Registers ``config_type`` (a frozen dataclass): ``build(config, rngs=...)`` makes its
    model, trained with ``objective``; ``check(config, task)`` validates the pair."""
    if not dataclasses.is_dataclass(config_type):
        raise ValueError(f"config_type is {config_type!r}, expected a dataclass type")
    entry = ModelEntry(config_type, build, objective, check)
    if _MODELS.get(config_type, entry) != entry:
        raise ValueError(f"{config_type.__name__} is already registered with "
                         f"{_MODELS[config_type]}")
    _MODELS[config_type] = entry


def model_entry(model_config: Any) -> ModelEntry:
    """The registration of ``model_config``'s type; raises naming the registered types."""
    entry = _MODELS.get(type(model_config))
    if entry is None:
        raise ValueError(f"model is a {type(model_config).__name__}, expected a config of a "
                         f"registered model: {', '.join(t.__name__ for t in _MODELS)} "
                         "(ssmjax.train.registry.register_model)")
    return entry


def check_mamba_task(config: MambaConfig, task: Any) -> None:
    """A language model reads the task's tokens: its vocabulary and S4 kernel must cover them."""
    if config.vocab_size < task.vocab_size:
        raise ValueError(f"model.vocab_size is {config.vocab_size}, smaller than the task's "
                         f"vocabulary of {task.vocab_size}")
    if config.l_max is not None and config.l_max < task.sequence_length:
        raise ValueError(f"model.l_max is {config.l_max}, shorter than the task's sequences of "
                         f"length {task.sequence_length}")


register_model(MambaConfig, build=MambaLM, objective=TOKEN, check=check_mamba_task)
