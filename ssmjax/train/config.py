"""Experiment configuration: frozen dataclasses, overrides applied at once, and run identity.

An experiment is a :class:`ExperimentConfig` (model, task, training); experiments live as
``experiments/configs/<name>.py`` files with a ``get_config()``. Overrides address fields by
dotted key (``train.steps=200``, ``model.d_model=64``), as ``key=value`` text (parsed by the
field's type) or as typed values; all of them are collected into one nested change and every
config is rebuilt once, so validation sees the final config and their order never matters.

A run's identity is its config less :data:`RESUMABLE_KEYS` (how long it runs, how often it
logs, evaluates and checkpoints, how many steps a call runs): a run may be resumed with other
values of those, and :func:`run_name` names a run directory by the rest.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import json
import pathlib
import types
import typing
from typing import Any, Mapping, Sequence

from ssmjax.train.feed import TaskConfig, check_task, is_host_task
from ssmjax.train.optim import OptimizerConfig
from ssmjax.train.registry import ModelConfig, model_entry
from ssmjax.train.sharding import DEFAULT_RULES, MeshAxes, check_rules


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop: steps, batch, evaluation, checkpoints, mesh, sharding and optimiser.

    ``steps_per_call`` optimiser steps run in one compiled call (a ``lax.scan`` over the steps'
    batches): a small model's step is shorter than the host's cost of launching it, so batching
    steps keeps the accelerator busy. It does not change the run: the same batches and updates
    as one step per call. Logging, evaluation and checkpoints happen between calls, so their
    intervals must be multiples of it.

    ``eval_batches``: batches per evaluation (``None``: one pass over the whole
    ``eval_split`` of a host task). ``best_metric``: the evaluation metric that picks the best
    checkpoint (``None``: the objective's, ``eval_loss`` for token prediction and
    ``eval_accuracy`` for classification). ``logical_axis_rules``: logical axis → mesh axes
    (``ssmjax.train.sharding``).
    """

    steps: int = 1000
    batch_size: int = 32
    grad_accum_steps: int = 1
    eval_every: int = 200
    eval_batches: int | None = 4
    eval_split: str = "validation"
    best_metric: str | None = None
    log_every: int = 50
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    steps_per_call: int = 1
    seed: int = 0
    mesh_data: int = -1
    mesh_fsdp: int = 1
    mesh_model: int = 1
    logical_axis_rules: tuple[tuple[str, MeshAxes], ...] = DEFAULT_RULES
    optimizer: OptimizerConfig = OptimizerConfig()

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum_steps", "eval_every", "log_every",
                     "checkpoint_every", "keep_checkpoints", "steps_per_call"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} is {getattr(self, name)}, expected a positive integer")
        if self.eval_batches is not None and self.eval_batches < 1:
            raise ValueError(f"train.eval_batches is {self.eval_batches}, expected a positive "
                             "integer or None (the whole evaluation split)")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"train.batch_size {self.batch_size} is not a multiple of "
                             f"train.grad_accum_steps {self.grad_accum_steps}")
        for name in ("log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) % self.steps_per_call:
                raise ValueError(f"train.{name} is {getattr(self, name)}, expected a multiple of "
                                 f"train.steps_per_call ({self.steps_per_call})")
        try:
            rules = check_rules(self.logical_axis_rules)
        except ValueError as error:
            raise ValueError(f"train.{error}") from None
        # A config read back from JSON holds lists here; tuples keep it hashable and equal.
        object.__setattr__(self, "logical_axis_rules", rules)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: which model learns which task, and how.

    ``model`` is a config of a registered model (``ssmjax.train.registry``: its type picks the
    model and the objective); ``task`` an on-device or a host task (``ssmjax.train.feed``).
    """

    name: str
    model: ModelConfig
    task: TaskConfig
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        entry = model_entry(self.model)
        check_task(self.task)
        if entry.check is not None:
            entry.check(self.model, self.task)
        if self.train.eval_batches is None and not is_host_task(self.task):
            raise ValueError(f"train.eval_batches is None (a pass over the whole evaluation "
                             f"split), but the task {type(self.task).__name__} is drawn on "
                             "device and has no split: set train.eval_batches")
        metric = self.train.best_metric
        if metric is not None and metric not in entry.objective.eval_metrics:
            raise ValueError(f"train.best_metric is {metric!r}, expected one of the "
                             f"{entry.objective.name} objective's "
                             f"{list(entry.objective.eval_metrics)}")

    @property
    def best_metric(self) -> str:
        """The evaluation metric that keeps the best checkpoint."""
        return self.train.best_metric or model_entry(self.model).objective.best_metric


# ---------------------------------------------------------------------------------------------
# Dotted keys and values

def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` of every leaf field of a (nested) dataclass config."""
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            values.update(flatten_config(value, f"{prefix}{field.name}."))
        else:
            values[prefix + field.name] = value
    return values


def valid_keys(config: Any) -> list[str]:
    """Every overridable dotted key of a config."""
    return list(flatten_config(config))


def config_json(config: Any) -> dict:
    """The config as plain JSON values (how checkpoints record it)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _flatten_json(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    values = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            values.update(_flatten_json(value, f"{prefix}{name}."))
        else:
            values[prefix + name] = value
    return values


def _field_defaults(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: the field's default as JSON}`` for every leaf field that has one."""
    defaults = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            defaults.update(_field_defaults(value, f"{prefix}{field.name}."))
        elif field.default is not dataclasses.MISSING:
            defaults[prefix + field.name] = json.loads(json.dumps(field.default, default=str))
        elif field.default_factory is not dataclasses.MISSING:
            defaults[prefix + field.name] = json.loads(json.dumps(field.default_factory(),
                                                                  default=str))
    return defaults


# ---------------------------------------------------------------------------------------------
# Overrides

def _options(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _is_scalar(annotation: Any) -> bool:
    return all(option in (int, float, bool, str, type(None)) for option in _options(annotation))


def _typed(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against ``annotation`` (ints are floats; lists are tuples)."""
    if annotation is Any:
        return value
    for option in _options(annotation):
        origin, args = typing.get_origin(option), typing.get_args(option)
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if origin is tuple and isinstance(value, (tuple, list)):
            try:
                if len(args) == 2 and args[1] is Ellipsis:
                    return tuple(_typed(item, args[0], key) for item in value)
                if len(args) == len(value):
                    return tuple(_typed(item, arg, key) for item, arg in zip(value, args))
            except ValueError:
                continue
        if origin is None and isinstance(option, type) and option not in (int, float, bool, str) \
                and isinstance(value, option):
            return value
    raise ValueError(f"{key}: {value!r} is a {type(value).__name__}, expected {_type_name(annotation)}")


def _parse(text: str, annotation: Any, key: str) -> Any:
    """Parses ``text`` as ``annotation``: int, float, bool, str, None, a union of those, a
    homogeneous tuple ``tuple[T, ...]`` of those written comma-separated, or any other tuple as
    a Python literal (``(("batch", ("data", "fsdp")), ("embed", None))``)."""
    options = _options(annotation)
    if type(None) in options and text.lower() == "none":
        return None
    for option in options:
        origin, args = typing.get_origin(option), typing.get_args(option)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis and _is_scalar(args[0]):
            try:
                return tuple(_parse(part.strip(), args[0], key) for part in text.split(",")
                             if part.strip())
            except ValueError:
                raise ValueError(f"--set {key}={text}: cannot parse {text!r} as "
                                 f"{_type_name(option)} (comma-separated)") from None
        if origin is tuple:
            try:
                return _typed(ast.literal_eval(text), option, key)
            except (ValueError, SyntaxError):
                raise ValueError(f"--set {key}={text}: cannot parse {text!r} as "
                                 f"{_type_name(option)} (a Python literal)") from None
        if option is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
        elif option in (int, float):
            try:
                return option(text)
            except ValueError:
                continue
    if str in options:
        return text
    for option in options:  # a plain class that takes its text (pathlib.Path)
        if isinstance(option, type) and option not in (int, float, bool, type(None)):
            try:
                return option(text)
            except (TypeError, ValueError):
                continue
    raise ValueError(f"--set {key}={text}: cannot parse {text!r} as {_type_name(annotation)}")


def parse_assignments(assignments: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` → ``{key: "value"}`` (a key given twice: the last value)."""
    changes = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {assignment!r}: expected key=value")
        changes[key.strip()] = text.strip()
    return changes


def _shown(key: str, value: Any) -> str:
    return f"{key}={value}" if isinstance(value, str) else f"{key}={value!r}"


class _OverrideError(ValueError):
    """A rejected override, already named; outer groups pass it on unchanged."""


def _leaf_annotation(config: Any, path: list[str], key: str, root: Any) -> Any:
    """The annotation of the field at ``path``, or a ValueError listing the valid keys."""
    node = config
    for depth, name in enumerate(path):
        fields = {f.name: f for f in dataclasses.fields(node)}
        if name not in fields:
            raise _OverrideError(f"--set {key}: unknown key; valid keys are: "
                                 f"{', '.join(valid_keys(root))}")
        value = getattr(node, name)
        last = depth == len(path) - 1
        if last and dataclasses.is_dataclass(value):
            raise _OverrideError(f"--set {key}: a group, set one of its keys: "
                                 f"{', '.join(k for k in valid_keys(root) if k.startswith(key + '.'))}")
        if not last and not dataclasses.is_dataclass(value):
            raise _OverrideError(f"--set {key}: {'.'.join(path[:depth + 1])} has no sub-keys; "
                                 f"valid keys are: {', '.join(valid_keys(root))}")
        if last:
            return typing.get_type_hints(type(node))[name]
        node = value
    raise _OverrideError(f"--set {key}: expected key=value")


def override(config: Any, changes: Mapping[str, Any] | Sequence[str]) -> Any:
    """``config`` with ``changes`` applied at once.

    Args:
        config: a frozen dataclass config (nested dataclasses are groups of dotted keys).
        changes: ``{dotted key: value}``, a value being typed (``{"train.steps": 200}``) or
            text parsed by the field's type (``{"train.steps": "200"}``); or ``key=value``
            strings (``--set`` arguments).

    Every config touched is rebuilt once with all of its changes, so its validation sees the
    final values and the order of ``changes`` never matters.

    Raises:
        ValueError: an unknown key (listing the valid ones), a value that does not parse or
            does not have the field's type, or a config that rejects the final values; each
            names the keys concerned.
    """
    if not isinstance(changes, Mapping):
        changes = parse_assignments(changes)
    nested: dict[str, Any] = {}
    shown = {}
    try:
        for key, value in changes.items():
            path = key.split(".")
            annotation = _leaf_annotation(config, path, key, config)
            if isinstance(value, str) and annotation not in (str, Any):
                value = _parse(value, annotation, key)
            else:
                try:
                    value = _typed(value, annotation, key)
                except ValueError as error:
                    raise _OverrideError(f"override {error}") from None
            shown[key] = _shown(key, changes[key])
            node = nested
            for name in path[:-1]:
                node = node.setdefault(name, {})
            node[path[-1]] = value
        return _rebuild(config, nested, "", shown)
    except _OverrideError as error:
        raise ValueError(str(error)) from None


def _rebuild(config: Any, nested: Mapping[str, Any], prefix: str, shown: Mapping[str, str]) -> Any:
    values = {name: _rebuild(getattr(config, name), change, f"{prefix}{name}.", shown)
              if isinstance(change, dict) else change for name, change in nested.items()}
    try:
        return dataclasses.replace(config, **values)
    except _OverrideError:
        raise
    except ValueError as error:  # the config's own validation, e.g. a negative size
        keys = [text for key, text in shown.items() if key.startswith(prefix)]
        raise _OverrideError(f"--set {', '.join(keys)}: {error}") from None


# ---------------------------------------------------------------------------------------------
# Run identity

RESUMABLE_KEYS = frozenset({
    "train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.steps_per_call"})
"""Keys that may change when a run resumes: they change when the run stops and what it
records, not the batches or the updates of its steps. (Raising ``train.steps`` extends a run;
a cosine schedule then decays over the new length from the step where it resumes.)"""

ABSENT = object()
"""The value of a key that one of two configs compared by :func:`run_differences` lacks."""


def _differences(saved: Mapping[str, Any], config: Any,
                 include: Any) -> dict[str, tuple[Any, Any]]:
    current = _flatten_json(config_json(config))
    written = _flatten_json(saved)
    defaults = _field_defaults(config)
    differences = {}
    for key in sorted(set(current) | set(written)):
        if not include(key):
            continue
        old = written.get(key, defaults.get(key, ABSENT))
        new = current.get(key, ABSENT)
        if old != new:
            differences[key] = (old, new)
    return differences


def run_differences(saved: Mapping[str, Any], config: Any) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, value in config)}`` for every key of the run's identity
    that differs between ``saved`` (a config as :func:`config_json` wrote it, e.g. in a
    checkpoint) and ``config``.

    A key ``saved`` lacks (a field added since it was written) counts as its default; a key
    only ``saved`` has (a field since removed) differs (:data:`ABSENT` on the other side).
    """
    return _differences(saved, config, lambda key: key not in RESUMABLE_KEYS)


def changed_resumable_keys(saved: Mapping[str, Any], config: Any) -> dict[str, tuple[Any, Any]]:
    """As :func:`run_differences`, for the :data:`RESUMABLE_KEYS` alone."""
    return _differences(saved, config, lambda key: key in RESUMABLE_KEYS)


def describe_differences(differences: Mapping[str, tuple[Any, Any]]) -> str:
    """``key: old → new`` for each key, comma-separated."""
    def shown(value: Any) -> str:
        return "(no such field)" if value is ABSENT else json.dumps(value)

    return ", ".join(f"{key}: {shown(old)} → {shown(new)}" for key, (old, new) in differences.items())


def run_name(written: Any, config: Any) -> str:
    """The name of ``config``'s run directory: ``<name>`` when its identity is the config as
    ``written``, else ``<name>-<hash>``, ``<hash>`` 8 hex digits of a SHA-256 of the keys of the
    identity that differ and their values (stable across processes and machines)."""
    changes = {key: "(no such field)" if new is ABSENT else new
               for key, (_, new) in run_differences(config_json(written), config).items()}
    if not changes:
        return config.name
    digest = hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.name}-{digest}"


# ---------------------------------------------------------------------------------------------
# Config files

def available_configs(directory: pathlib.Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.py") if not p.stem.startswith("_"))


def load_config(name: str, directory: pathlib.Path) -> ExperimentConfig:
    """``get_config()`` of ``<directory>/<name>.py``."""
    path = directory / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"--config {name!r}: no such config in {directory}; available: "
                         f"{', '.join(available_configs(directory)) or 'none'}")
    spec = importlib.util.spec_from_file_location(f"ssmjax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
