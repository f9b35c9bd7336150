"""Tensor names and layouts: PyTorch state dicts ↔ ssmjax parameters.

ssmjax parameters are addressed by their NNX path joined with dots
(``layers.3.mixer.in_proj.kernel``). Per layer ``N``, under ``backbone.layers.N.`` in both
PyTorch formats:

    ==========================  =============================  =========================
    PyTorch tensor (layout)     ssmjax parameter (layout)      change
    ==========================  =============================  =========================
    mixer.in_proj.weight        mixer.in_proj.kernel           (out, in) → (in, out)
    mixer.in_proj.bias          mixer.in_proj.bias             (bias=True only)
    mixer.conv1d.weight         mixer.conv_weight              (d, 1, k) → (d, k)
    mixer.conv1d.bias           mixer.conv_bias                (conv_bias=True only)
    mixer.x_proj.weight         mixer.x_proj.kernel            transpose
    mixer.dt_proj.weight        mixer.dt_proj.kernel           transpose
    mixer.dt_proj.bias          mixer.dt_bias                  the scan's Δ bias
    mixer.A_log, mixer.D        mixer.A_log, mixer.D
    mixer.out_proj.weight       mixer.out_proj.kernel          transpose
    mixer.out_proj.bias         mixer.out_proj.bias            (bias=True only)
    norm.weight                 norm.weight
    ==========================  =============================  =========================

and ``backbone.embedding.weight`` (mamba-ssm) or ``backbone.embeddings.weight``
(transformers) → ``embedding.embedding``; ``backbone.norm_f.weight`` → ``norm_f.weight``;
``lm_head.weight (vocab, d_model)`` → ``lm_head.kernel (d_model, vocab)`` when the head is not
tied to the embedding (when it is, ``lm_head.weight`` may be absent, or must equal the
embedding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from ssmjax.convert.configs import ConversionError
from ssmjax.models import MambaConfig

EMBEDDING_NAMES = {"hf": "backbone.embeddings.weight", "mamba_ssm": "backbone.embedding.weight"}
LM_HEAD = "lm_head.weight"


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a PyTorch tensor becomes an ssmjax array, and back."""

    name: str
    to_ssmjax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


COPY = Layout("copy", lambda x: x, lambda x: x)
TRANSPOSE = Layout("transpose", lambda x: x.T, lambda x: x.T)
DEPTHWISE_CONV = Layout("depthwise conv", lambda x: x[:, 0, :], lambda x: x[:, None, :])


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One tensor: its PyTorch name and shape, its ssmjax path, and the layout change."""

    torch_name: str
    ssmjax_path: str
    torch_shape: tuple[int, ...]
    meaning: str
    layout: Layout = COPY


def _dt_rank(config: MambaConfig) -> int:
    return -(-config.d_model // 16) if config.dt_rank == "auto" else int(config.dt_rank)


def tensor_specs(config: MambaConfig, fmt: str) -> list[TensorSpec]:
    """Every tensor a checkpoint of ``config`` holds in format ``fmt`` (``"hf"``/``"mamba_ssm"``).

    ``lm_head.weight`` is listed only for an untied head.
    """
    if fmt not in EMBEDDING_NAMES:
        raise ValueError(f"fmt is {fmt!r}, expected 'hf' or 'mamba_ssm'")
    d, di, n, k, r = config.d_model, config.expand * config.d_model, config.d_state, config.d_conv, _dt_rank(config)
    vocab = config.padded_vocab_size
    specs = [TensorSpec(EMBEDDING_NAMES[fmt], "embedding.embedding", (vocab, d), "(vocab rows, d_model)")]
    for i in range(config.n_layer):
        t, s = f"backbone.layers.{i}.", f"layers.{i}."
        layer = [
            TensorSpec(t + "mixer.in_proj.weight", s + "mixer.in_proj.kernel", (2 * di, d),
                       "(2·d_inner, d_model)", TRANSPOSE),
            TensorSpec(t + "mixer.conv1d.weight", s + "mixer.conv_weight", (di, 1, k),
                       "(d_inner, 1, d_conv)", DEPTHWISE_CONV),
            TensorSpec(t + "mixer.x_proj.weight", s + "mixer.x_proj.kernel", (r + 2 * n, di),
                       "(dt_rank + 2·d_state, d_inner)", TRANSPOSE),
            TensorSpec(t + "mixer.dt_proj.weight", s + "mixer.dt_proj.kernel", (di, r),
                       "(d_inner, dt_rank)", TRANSPOSE),
            TensorSpec(t + "mixer.dt_proj.bias", s + "mixer.dt_bias", (di,), "(d_inner,)"),
            TensorSpec(t + "mixer.A_log", s + "mixer.A_log", (di, n), "(d_inner, d_state)"),
            TensorSpec(t + "mixer.D", s + "mixer.D", (di,), "(d_inner,)"),
            TensorSpec(t + "mixer.out_proj.weight", s + "mixer.out_proj.kernel", (d, di),
                       "(d_model, d_inner)", TRANSPOSE),
            TensorSpec(t + "norm.weight", s + "norm.weight", (d,), "(d_model,)"),
        ]
        if config.conv_bias:
            layer.append(TensorSpec(t + "mixer.conv1d.bias", s + "mixer.conv_bias", (di,), "(d_inner,)"))
        if config.bias:
            layer += [TensorSpec(t + "mixer.in_proj.bias", s + "mixer.in_proj.bias", (2 * di,), "(2·d_inner,)"),
                      TensorSpec(t + "mixer.out_proj.bias", s + "mixer.out_proj.bias", (d,), "(d_model,)")]
        specs += layer
    specs.append(TensorSpec("backbone.norm_f.weight", "norm_f.weight", (d,), "(d_model,)"))
    if not config.tie_embeddings:
        specs.append(TensorSpec(LM_HEAD, "lm_head.kernel", (vocab, d), "(vocab rows, d_model)", TRANSPOSE))
    return specs


def _describe(config: MambaConfig) -> str:
    return (f"d_model={config.d_model}, d_inner={config.expand * config.d_model}, "
            f"d_state={config.d_state}, d_conv={config.d_conv}, dt_rank={_dt_rank(config)}, "
            f"vocab rows={config.padded_vocab_size}, n_layer={config.n_layer}")


def _list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def state_dict_to_params(state_dict: Mapping[str, np.ndarray], config: MambaConfig,
                         fmt: str) -> dict[str, np.ndarray]:
    """A PyTorch-layout state dict → ssmjax parameters (dotted paths, ssmjax layouts).

    Raises :class:`ConversionError` listing every missing, unexpected and mis-shaped tensor
    (shapes are checked against ``config``, so a config that does not match its weights is
    caught here).
    """
    specs = tensor_specs(config, fmt)
    expected = {spec.torch_name for spec in specs}
    tied_head = config.tie_embeddings and LM_HEAD in state_dict
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected - ({LM_HEAD} if tied_head else set()))
    misshaped = [f"{spec.torch_name} has shape {tuple(np.shape(state_dict[spec.torch_name]))}, "
                 f"expected {spec.torch_shape} {spec.meaning}"
                 for spec in specs if spec.torch_name in state_dict
                 and tuple(np.shape(state_dict[spec.torch_name])) != spec.torch_shape]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_list(missing)}")
    if unexpected:
        other = {"hf": "mamba_ssm", "mamba_ssm": "hf"}[fmt]
        hint = (f" (names of the {other} format?)" if EMBEDDING_NAMES[other] in unexpected else "")
        problems.append(f"unexpected tensors{hint}: {_list(unexpected)}")
    if misshaped:
        problems.append("mis-shaped tensors: " + "; ".join(misshaped[:8]))
    if problems:
        raise ConversionError(f"{fmt} state dict does not match the config ({_describe(config)}): "
                              + " | ".join(problems))
    if tied_head:
        embedding = np.asarray(state_dict[EMBEDDING_NAMES[fmt]])
        head = np.asarray(state_dict[LM_HEAD])
        if head.shape != embedding.shape or not np.array_equal(head, embedding):
            raise ConversionError(f"{fmt} config ties the LM head to the embedding, but {LM_HEAD} "
                                  f"(shape {head.shape}) differs from {EMBEDDING_NAMES[fmt]}")
    return {spec.ssmjax_path: np.ascontiguousarray(spec.layout.to_ssmjax(np.asarray(state_dict[spec.torch_name])))
            for spec in specs}


def params_to_state_dict(params: Mapping[str, np.ndarray], config: MambaConfig, fmt: str, *,
                         include_tied_head: bool) -> dict[str, np.ndarray]:
    """ssmjax parameters → a PyTorch-layout state dict of format ``fmt``.

    ``include_tied_head`` writes ``lm_head.weight`` as a copy of the embedding when the head
    is tied (mamba-ssm's strict ``load_state_dict`` expects it; transformers leaves it out).
    """
    specs = tensor_specs(config, fmt)
    missing = sorted({spec.ssmjax_path for spec in specs} - set(params))
    if missing:
        raise ConversionError(f"ssmjax parameters lack {_list(missing)} for config ({_describe(config)})")
    state_dict = {spec.torch_name: np.ascontiguousarray(spec.layout.to_torch(np.asarray(params[spec.ssmjax_path])))
                  for spec in specs}
    if config.tie_embeddings and include_tied_head:
        state_dict[LM_HEAD] = state_dict[EMBEDDING_NAMES[fmt]].copy()
    return state_dict
