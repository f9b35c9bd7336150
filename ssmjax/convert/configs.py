"""Configuration files of the three checkpoint formats and :class:`MambaConfig`.

* ``"mamba_ssm"``: mamba-ssm's ``MambaLMHeadModel``; ``config.json`` with ``d_model``,
  ``n_layer``, ``vocab_size`` (the real vocabulary; the embedding has it rounded up to
  ``pad_vocab_size_multiple``), ``ssm_cfg`` (the mixer's keyword arguments), ``rms_norm``,
  ``residual_in_fp32``, ``fused_add_norm``, ``pad_vocab_size_multiple``, ``tie_embeddings``.
* ``"hf"``: transformers' ``MambaForCausalLM``; ``config.json`` with ``model_type: "mamba"``,
  ``hidden_size``, ``num_hidden_layers``, ``vocab_size`` (= rows of the embedding),
  ``state_size``, ``conv_kernel``, ``expand``, ``time_step_rank``, ...
* ``"ssmjax"``: this library's own: ``config.json`` holding the fields of
  :class:`MambaConfig` under ``"mamba_config"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ssmjax.models import MambaConfig

FORMATS = ("ssmjax", "hf", "mamba_ssm")
SSMJAX_FORMAT_VERSION = 1


class ConversionError(ValueError):
    """A checkpoint in a format (config.json, tensors) that cannot be converted into, or
    written from, a :class:`MambaLM`. (Training checkpoints that cannot be resumed raise
    ``ssmjax.train.CheckpointError``, another matter.)"""


def detect_format(config: dict[str, Any]) -> str:
    """Which of :data:`FORMATS` a parsed ``config.json`` belongs to."""
    if config.get("format") == "ssmjax":
        return "ssmjax"
    if "d_model" in config and "n_layer" in config:
        return "mamba_ssm"
    if config.get("model_type") == "mamba" or "hidden_size" in config and "state_size" in config:
        return "hf"
    model_type = config.get("model_type")
    hint = f" (model_type {model_type!r} is not Mamba-1)" if model_type else ""
    raise ConversionError(f"config.json has keys {sorted(config)[:12]}{hint}: expected a mamba-ssm config "
                          "(d_model, n_layer, ...), a transformers MambaConfig (model_type 'mamba') "
                          "or an ssmjax config (format 'ssmjax')")


# mamba-ssm ssm_cfg keys → MambaConfig fields. Keys that only choose a kernel or an
# initialisation scheme are accepted and ignored; anything else is refused.
_SSM_CFG_FIELDS = {"d_state": "d_state", "d_conv": "d_conv", "expand": "expand",
                   "dt_rank": "dt_rank", "dt_min": "dt_min", "dt_max": "dt_max",
                   "dt_init_floor": "dt_init_floor", "dt_scale": "dt_scale",
                   "conv_bias": "conv_bias", "bias": "bias"}
_SSM_CFG_IGNORED = {"dt_init", "use_fast_path", "layer_idx", "device", "dtype"}
_MAMBA_SSM_IGNORED = {"fused_add_norm", "ssm_cfg", "d_model", "n_layer", "vocab_size",
                      "rms_norm", "residual_in_fp32", "pad_vocab_size_multiple", "tie_embeddings",
                      "d_intermediate", "attn_layer_idx", "attn_cfg", "norm_epsilon",
                      "initializer_cfg", "_name_or_path", "architectures"}


def _config_error(fmt: str, message: str) -> ConversionError:
    return ConversionError(f"{fmt} config.json: {message}")


def config_from_mamba_ssm(config: dict[str, Any], **overrides) -> MambaConfig:
    """``MambaLMHeadModel`` config → :class:`MambaConfig`; refuses what ssmjax cannot run."""
    unknown = sorted(set(config) - _MAMBA_SSM_IGNORED)
    if unknown:
        raise _config_error("mamba_ssm", f"unknown keys {unknown}")
    ssm_cfg = dict(config.get("ssm_cfg") or {})
    layer = ssm_cfg.pop("layer", "Mamba1")
    if layer != "Mamba1":
        raise _config_error("mamba_ssm", f"ssm_cfg.layer is {layer!r}; only Mamba1 mixers are supported")
    unknown = sorted(set(ssm_cfg) - set(_SSM_CFG_FIELDS) - _SSM_CFG_IGNORED)
    if unknown:
        raise _config_error("mamba_ssm", f"unknown ssm_cfg keys {unknown}")
    if not config.get("rms_norm", True):
        raise _config_error("mamba_ssm", "rms_norm is false (LayerNorm blocks); ssmjax blocks use RMSNorm")
    if config.get("d_intermediate", 0):
        raise _config_error("mamba_ssm", f"d_intermediate is {config['d_intermediate']}; blocks with an MLP "
                            "are not supported")
    if config.get("attn_layer_idx"):
        raise _config_error("mamba_ssm", f"attn_layer_idx is {config['attn_layer_idx']}; attention layers "
                            "are not supported")
    fields = {_SSM_CFG_FIELDS[k]: v for k, v in ssm_cfg.items() if k in _SSM_CFG_FIELDS}
    for key in ("d_model", "n_layer", "vocab_size"):
        if key not in config:
            raise _config_error("mamba_ssm", f"missing key {key!r}")
    return MambaConfig(
        d_model=config["d_model"], n_layer=config["n_layer"], vocab_size=config["vocab_size"],
        residual_in_fp32=config.get("residual_in_fp32", True),
        pad_vocab_size_multiple=config.get("pad_vocab_size_multiple", 8),
        tie_embeddings=config.get("tie_embeddings", True),
        norm_eps=config.get("norm_epsilon", 1e-5), **{**fields, **overrides})


def config_to_mamba_ssm(config: MambaConfig) -> dict[str, Any]:
    """:class:`MambaConfig` → ``MambaLMHeadModel`` config."""
    ssm_cfg = {"d_state": config.d_state, "d_conv": config.d_conv, "expand": config.expand,
               "dt_rank": config.dt_rank, "dt_min": config.dt_min, "dt_max": config.dt_max,
               "dt_init_floor": config.dt_init_floor, "dt_scale": config.dt_scale,
               "conv_bias": config.conv_bias, "bias": config.bias}
    out = {"d_model": config.d_model, "n_layer": config.n_layer, "vocab_size": config.vocab_size,
           "ssm_cfg": ssm_cfg, "rms_norm": True, "residual_in_fp32": config.residual_in_fp32,
           "fused_add_norm": True, "pad_vocab_size_multiple": config.pad_vocab_size_multiple,
           "tie_embeddings": config.tie_embeddings}
    if config.norm_eps != 1e-5:  # mamba-ssm's default; only written when it differs
        out["norm_epsilon"] = config.norm_eps
    return out


def config_from_hf(config: dict[str, Any], **overrides) -> MambaConfig:
    """transformers ``MambaConfig`` dict → :class:`MambaConfig`.

    transformers' ``vocab_size`` is the number of embedding rows, so the vocabulary is not
    padded further (``pad_vocab_size_multiple=1``) and the logits keep every row.
    """
    if config.get("model_type", "mamba") != "mamba":
        raise _config_error("hf", f"model_type is {config['model_type']!r}, expected 'mamba'")
    if config.get("hidden_act", "silu") != "silu":
        raise _config_error("hf", f"hidden_act is {config['hidden_act']!r}; the Mamba mixer uses 'silu'")
    for key in ("hidden_size", "num_hidden_layers", "vocab_size"):
        if key not in config:
            raise _config_error("hf", f"missing key {key!r}")
    hidden = config["hidden_size"]
    expand = config.get("expand", 2)
    if "intermediate_size" in config and config["intermediate_size"] != expand * hidden:
        raise _config_error("hf", f"intermediate_size is {config['intermediate_size']}, expected "
                            f"expand * hidden_size = {expand} * {hidden}")
    return MambaConfig(
        d_model=hidden, n_layer=config["num_hidden_layers"], vocab_size=config["vocab_size"],
        d_state=config.get("state_size", 16), d_conv=config.get("conv_kernel", 4), expand=expand,
        dt_rank=config.get("time_step_rank", "auto"), dt_min=config.get("time_step_min", 0.001),
        dt_max=config.get("time_step_max", 0.1), dt_init_floor=config.get("time_step_floor", 1e-4),
        dt_scale=config.get("time_step_scale", 1.0), conv_bias=config.get("use_conv_bias", True),
        bias=config.get("use_bias", False), norm_eps=config.get("layer_norm_epsilon", 1e-5),
        residual_in_fp32=config.get("residual_in_fp32", True), pad_vocab_size_multiple=1,
        tie_embeddings=config.get("tie_word_embeddings", True), **overrides)


def config_to_hf(config: MambaConfig) -> dict[str, Any]:
    """:class:`MambaConfig` → transformers ``MambaConfig`` dict (vocab_size = embedding rows)."""
    return {"model_type": "mamba", "architectures": ["MambaForCausalLM"],
            "hidden_size": config.d_model, "num_hidden_layers": config.n_layer,
            "vocab_size": config.padded_vocab_size, "state_size": config.d_state,
            "conv_kernel": config.d_conv, "expand": config.expand,
            "intermediate_size": config.expand * config.d_model,
            "time_step_rank": config.dt_rank, "time_step_min": config.dt_min,
            "time_step_max": config.dt_max, "time_step_floor": config.dt_init_floor,
            "time_step_scale": config.dt_scale, "use_conv_bias": config.conv_bias,
            "use_bias": config.bias, "layer_norm_epsilon": config.norm_eps,
            "residual_in_fp32": config.residual_in_fp32, "hidden_act": "silu",
            "tie_word_embeddings": config.tie_embeddings}


# Fields that describe how to run, not what the weights are: not written to checkpoints.
_RUNTIME_FIELDS = ("dtype", "scan_backend", "chunk_size")


def config_from_ssmjax(config: dict[str, Any], **overrides) -> MambaConfig:
    """ssmjax ``config.json`` → :class:`MambaConfig`."""
    version = config.get("format_version")
    if version != SSMJAX_FORMAT_VERSION:
        raise _config_error("ssmjax", f"format_version is {version!r}, expected {SSMJAX_FORMAT_VERSION}")
    fields = dict(config.get("mamba_config") or {})
    known = {f.name for f in dataclasses.fields(MambaConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise _config_error("ssmjax", f"unknown mamba_config keys {unknown}")
    return MambaConfig(**{**fields, **overrides})


def config_to_ssmjax(config: MambaConfig, generation: dict[str, Any] | None = None) -> dict[str, Any]:
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in _RUNTIME_FIELDS}
    return {"format": "ssmjax", "format_version": SSMJAX_FORMAT_VERSION, "mamba_config": fields,
            "generation": generation or {}}


def config_from_dict(config: dict[str, Any], fmt: str | None = None, **overrides) -> MambaConfig:
    """Parsed ``config.json`` of format ``fmt`` (detected when ``None``) → :class:`MambaConfig`.

    ``overrides`` set runtime fields (``dtype``, ``scan_backend``, ``chunk_size``).
    """
    fmt = fmt or detect_format(config)
    readers = {"ssmjax": config_from_ssmjax, "hf": config_from_hf, "mamba_ssm": config_from_mamba_ssm}
    if fmt not in readers:
        raise ValueError(f"fmt is {fmt!r}, expected one of {FORMATS}")
    unknown = sorted(set(overrides) - set(_RUNTIME_FIELDS))
    if unknown:
        raise ValueError(f"overrides {unknown} are not runtime fields; expected some of {_RUNTIME_FIELDS}")
    try:
        return readers[fmt](config, **overrides)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConversionError):
            raise
        raise _config_error(fmt, str(error)) from error


def config_to_dict(config: MambaConfig, fmt: str, generation: dict[str, Any] | None = None) -> dict[str, Any]:
    """:class:`MambaConfig` → the ``config.json`` of format ``fmt``.

    ``generation`` (``eos_token_id``, ``bos_token_id``, ``pad_token_id``) is kept in every
    format: under ``"generation"`` for ssmjax, as top-level keys for the others.
    """
    generation = {k: v for k, v in (generation or {}).items() if v is not None}
    if fmt in ("hf", "mamba_ssm") and config.mixer != "mamba":
        raise ValueError(f"config.mixer is {config.mixer!r}: only 'mamba' models have a {fmt} "
                         "format; save it as 'ssmjax'")
    if fmt == "ssmjax":
        return config_to_ssmjax(config, generation)
    if fmt == "hf":
        return {**config_to_hf(config), **generation}
    if fmt == "mamba_ssm":
        return config_to_mamba_ssm(config)  # MambaLMHeadModel(**config) takes no other keys
    raise ValueError(f"fmt is {fmt!r}, expected one of {FORMATS}")


def generation_ids(config: dict[str, Any], fmt: str) -> dict[str, Any]:
    """``eos_token_id`` / ``bos_token_id`` / ``pad_token_id`` that a ``config.json`` names."""
    source = config.get("generation", {}) if fmt == "ssmjax" else config
    return {k: source[k] for k in ("eos_token_id", "bos_token_id", "pad_token_id") if source.get(k) is not None}
