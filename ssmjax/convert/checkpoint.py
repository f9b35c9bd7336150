"""Reading and writing checkpoint directories of the three formats.

Tensor files, in the order they are looked for:

* ``model.safetensors`` or a sharded ``model.safetensors.index.json``: read with
  safetensors' NumPy API (no torch needed);
* ``pytorch_model.bin`` or ``pytorch_model.bin.index.json``: a pickled PyTorch state dict,
  which needs torch (an optional dependency, imported only then).

Tokenizer files (``tokenizer.json`` and friends) are copied along by :func:`save_pretrained`
when given the directory they come from.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssmjax.convert.configs import (FORMATS, ConversionError, config_from_dict, config_to_dict,
                                    detect_format, generation_ids)
from ssmjax.convert.tensors import params_to_state_dict, state_dict_to_params
from ssmjax.models import MambaConfig, MambaLM

SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "generation_config.json")


class CheckpointInfo(NamedTuple):
    """What :func:`load_pretrained` learnt besides the weights.

    Attributes:
        format: one of :data:`~ssmjax.convert.FORMATS`.
        source_config: the parsed ``config.json``.
        generation: ``eos_token_id`` / ``bos_token_id`` / ``pad_token_id`` where named.
        tokenizer_file: ``tokenizer.json`` of the directory, if there is one.
    """

    format: str
    source_config: dict[str, Any]
    generation: dict[str, Any]
    tokenizer_file: Path | None


def _require(module: str, purpose: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        raise ImportError(f"{purpose} needs the optional dependency {module.split('.')[0]!r}: "
                          f"pip install {module.split('.')[0]}") from error


def _torch_to_numpy(tensor) -> np.ndarray:
    torch = _require("torch", "reading a PyTorch .bin checkpoint")
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16; ml_dtypes (a jax dependency) has
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``.safetensors`` file → ``{name: array}`` through safetensors' NumPy API."""
    return dict(_require("safetensors.numpy", "reading a .safetensors checkpoint").load_file(str(path)))


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A pickled PyTorch state dict → ``{name: array}`` (torch required; tensors only)."""
    torch = _require("torch", f"reading {Path(path).name}")
    state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"{path} holds a {type(state_dict).__name__}, expected a state dict")
    return {name: _torch_to_numpy(tensor) for name, tensor in state_dict.items()}


def _read_shards(index_path: Path, reader) -> dict[str, np.ndarray]:
    weight_map = json.loads(index_path.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ConversionError(f"{index_path} has no weight_map")
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(reader(index_path.parent / shard))
    return tensors


def read_state_dict(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory, preferring safetensors over ``.bin``."""
    directory = Path(directory)
    candidates = [(SAFETENSORS_FILE, read_safetensors), (TORCH_FILE, read_torch_bin)]
    for name, reader in candidates:
        if (directory / name).is_file():
            return reader(directory / name)
        index = directory / f"{name}.index.json"
        if index.is_file():
            return _read_shards(index, reader)
    raise ConversionError(f"{directory} has no {SAFETENSORS_FILE}, {TORCH_FILE} or sharded index of them")


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ConversionError(f"{directory} has no config.json")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# ssmjax parameters ↔ MambaLM
# --------------------------------------------------------------------------------------------

def _path_name(path: tuple) -> str:
    return ".".join(str(part) for part in path)


def model_params(model: MambaLM) -> dict[str, np.ndarray]:
    """``{dotted NNX path: array}`` of every parameter of ``model``."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {_path_name(path): np.asarray(variable.get_value()) for path, variable in flat}


def model_from_params(config: MambaConfig, params: Mapping[str, np.ndarray], *,
                      param_dtype: jnp.dtype | None = jnp.float32) -> MambaLM:
    """A :class:`MambaLM` of ``config`` holding ``params`` (cast to ``param_dtype``; ``None``
    keeps each array's own dtype).

    The model is built abstractly first, so no random initialisation is spent on weights
    that are about to be replaced. Raises :class:`ConversionError` when a parameter is
    missing, unexpected or of the wrong shape.
    """
    abstract = nnx.eval_shape(lambda: MambaLM(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    flat = list(nnx.to_flat_state(state))
    expected = {_path_name(path): variable.get_value().shape for path, variable in flat}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    misshaped = [f"{name} has shape {tuple(np.shape(params[name]))}, expected {shape}"
                 for name, shape in expected.items()
                 if name in params and tuple(np.shape(params[name])) != tuple(shape)]
    if missing or unexpected or misshaped:
        raise ConversionError(f"ssmjax parameters do not match the config: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}, mis-shaped {misshaped[:8]}")
    leaves = [(path, variable.replace(jnp.asarray(params[_path_name(path)], param_dtype)))
              for path, variable in flat]
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


# --------------------------------------------------------------------------------------------
# Directories
# --------------------------------------------------------------------------------------------

def load_params(directory: str | os.PathLike,
                **config_overrides) -> tuple[MambaConfig, dict[str, np.ndarray], CheckpointInfo]:
    """A checkpoint directory of any format → ``(config, ssmjax params, info)``."""
    directory = Path(directory)
    source = read_config(directory)
    fmt = detect_format(source)
    config = config_from_dict(source, fmt, **config_overrides)
    tensors = read_state_dict(directory)
    if fmt == "ssmjax":
        params = tensors
    else:
        params = state_dict_to_params(tensors, config, fmt)
    tokenizer = directory / "tokenizer.json"
    info = CheckpointInfo(fmt, source, generation_ids(source, fmt),
                          tokenizer if tokenizer.is_file() else None)
    return config, params, info


def load_pretrained(directory: str | os.PathLike, *, param_dtype: jnp.dtype = jnp.float32,
                    **config_overrides) -> tuple[MambaLM, CheckpointInfo]:
    """Loads a mamba-ssm, transformers or ssmjax checkpoint directory into a :class:`MambaLM`.

    Args:
        directory: holds ``config.json`` and ``model.safetensors`` / ``pytorch_model.bin``
            (or their sharded index).
        param_dtype: dtype of the parameters in memory.
        **config_overrides: runtime fields of :class:`MambaConfig` (``dtype``,
            ``scan_backend``, ``chunk_size``).

    Returns:
        ``(model, info)``, see :class:`CheckpointInfo`.
    """
    config, params, info = load_params(directory, **config_overrides)
    return model_from_params(config, params, param_dtype=param_dtype), info


def _write_safetensors(tensors: Mapping[str, np.ndarray], path: Path, metadata: dict[str, str]) -> None:
    _require("safetensors.numpy", "writing a .safetensors checkpoint").save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)


def _write_torch_bin(tensors: Mapping[str, np.ndarray], path: Path) -> None:
    torch = _require("torch", f"writing {path.name}")
    state_dict = {}
    for name, array in tensors.items():
        if array.dtype.name == "bfloat16":
            state_dict[name] = torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
        else:
            state_dict[name] = torch.from_numpy(np.array(array))
    torch.save(state_dict, str(path))


def save_pretrained(model: MambaLM, directory: str | os.PathLike, fmt: str = "ssmjax", *,
                    generation: dict[str, Any] | None = None, tokenizer_dir: str | os.PathLike | None = None,
                    safetensors: bool | None = None, dtype: np.dtype | str | None = None) -> Path:
    """Writes ``model`` as a checkpoint directory of format ``fmt``.

    Args:
        model: the model to write.
        directory: created if needed; existing checkpoint files in it are replaced.
        fmt: ``"ssmjax"``, ``"hf"`` (loads with ``MambaForCausalLM.from_pretrained``) or
            ``"mamba_ssm"`` (loads with ``MambaLMHeadModel.from_pretrained``).
        generation: ``eos_token_id`` / ``bos_token_id`` / ``pad_token_id`` to record.
        tokenizer_dir: a directory whose tokenizer files are copied along.
        safetensors: write ``model.safetensors`` (default for ``"ssmjax"`` and ``"hf"``)
            rather than ``pytorch_model.bin`` (default for ``"mamba_ssm"``, whose loader reads
            only that; needs torch).
        dtype: cast the tensors (e.g. ``"bfloat16"``); default: as in memory.

    Returns:
        The directory.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt is {fmt!r}, expected one of {FORMATS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    params = model_params(model)
    if dtype is not None:
        target = jnp.dtype(dtype)
        params = {k: np.asarray(jnp.asarray(v).astype(target)) for k, v in params.items()}
    if fmt == "ssmjax":
        tensors = params
    else:
        tensors = params_to_state_dict(params, config, fmt, include_tied_head=fmt == "mamba_ssm")
    use_safetensors = fmt != "mamba_ssm" if safetensors is None else safetensors
    if fmt == "ssmjax" and not use_safetensors:
        raise ValueError("safetensors is False, but the ssmjax format is always written as safetensors")
    for stale in (SAFETENSORS_FILE, TORCH_FILE, SAFETENSORS_FILE + ".index.json", TORCH_FILE + ".index.json"):
        (directory / stale).unlink(missing_ok=True)
    if use_safetensors:
        _write_safetensors(tensors, directory / SAFETENSORS_FILE, {"format": "pt" if fmt != "ssmjax" else "ssmjax"})
    else:
        _write_torch_bin(tensors, directory / TORCH_FILE)
    (directory / "config.json").write_text(json.dumps(config_to_dict(config, fmt, generation), indent=2) + "\n")
    if tokenizer_dir is not None and Path(tokenizer_dir).resolve() != directory.resolve():
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copyfile(Path(tokenizer_dir) / name, directory / name)
    return directory


def convert(source: str | os.PathLike, destination: str | os.PathLike, fmt: str = "ssmjax", *,
            dtype: str | None = None, safetensors: bool | None = None) -> Path:
    """Converts a checkpoint directory of any format into ``fmt``, tokenizer files included."""
    config, params, info = load_params(source)
    # Keep the checkpoint's own dtype unless asked: a bfloat16 checkpoint stays that size.
    sample = next(iter(params.values()))
    param_dtype = jnp.dtype(dtype) if dtype else (sample.dtype if jnp.issubdtype(sample.dtype, jnp.floating)
                                                   else jnp.float32)
    model = model_from_params(config, params, param_dtype=param_dtype)
    return save_pretrained(model, destination, fmt, generation=info.generation, tokenizer_dir=source,
                           safetensors=safetensors)
