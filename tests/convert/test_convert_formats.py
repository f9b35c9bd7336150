"""Configs and tensor layouts of the three formats, without PyTorch."""

import dataclasses

import numpy as np
import pytest

from ssmjax.convert import (ConversionError, config_from_dict, config_to_dict, detect_format,
                            model_from_params, model_params, params_to_state_dict, random_params,
                            state_dict_to_params, tensor_specs)
from ssmjax.models import MambaConfig

CONFIG = MambaConfig(d_model=24, n_layer=2, vocab_size=50, d_state=4, expand=3, dt_rank=5,
                     bias=True, conv_bias=False, tie_embeddings=False, residual_in_fp32=False,
                     norm_eps=1e-6)


@pytest.mark.parametrize("fmt", ["ssmjax", "mamba_ssm"])
def test_configs_round_trip_exactly(fmt):
    written = config_to_dict(CONFIG, fmt, generation={"eos_token_id": 0})
    assert detect_format(written) == fmt
    assert config_from_dict(written) == CONFIG


def test_transformers_config_counts_the_padded_vocabulary():
    written = config_to_dict(CONFIG, "hf", generation={"eos_token_id": 0})
    assert detect_format(written) == "hf" and written["vocab_size"] == 56 and written["eos_token_id"] == 0
    read = config_from_dict(written)
    assert read == dataclasses.replace(CONFIG, vocab_size=56, pad_vocab_size_multiple=1)


def test_runtime_fields_are_overrides():
    read = config_from_dict(config_to_dict(CONFIG, "ssmjax"), dtype="bfloat16", scan_backend="chunked")
    assert read.dtype == "bfloat16" and read.scan_backend == "chunked"
    with pytest.raises(ValueError, match=r"overrides \['d_model'\] are not runtime fields"):
        config_from_dict(config_to_dict(CONFIG, "ssmjax"), d_model=8)


@pytest.mark.parametrize("fmt", ["hf", "mamba_ssm"])
def test_state_dict_layouts_round_trip(fmt):
    params = random_params(CONFIG, seed=0)
    state_dict = params_to_state_dict(params, CONFIG, fmt, include_tied_head=True)
    prefix = "backbone.layers.1.mixer."
    assert state_dict[prefix + "conv1d.weight"].shape == (72, 1, 4)
    assert state_dict[prefix + "in_proj.weight"].shape == (144, 24)
    np.testing.assert_array_equal(state_dict[prefix + "dt_proj.bias"], params["layers.1.mixer.dt_bias"])
    np.testing.assert_array_equal(state_dict["lm_head.weight"], params["lm_head.kernel"].T)
    assert prefix + "conv1d.bias" not in state_dict and prefix + "out_proj.bias" in state_dict
    back = state_dict_to_params(state_dict, CONFIG, fmt)
    assert sorted(back) == sorted(params)
    for name, value in back.items():
        np.testing.assert_array_equal(value, params[name], err_msg=name)
    rebuilt = model_params(model_from_params(CONFIG, back))
    for name, value in rebuilt.items():
        np.testing.assert_array_equal(value, params[name], err_msg=name)


def test_tied_heads_list_no_head_tensor():
    names = {spec.torch_name for spec in tensor_specs(dataclasses.replace(CONFIG, tie_embeddings=True), "hf")}
    assert "lm_head.weight" not in names and "backbone.embeddings.weight" in names


@pytest.mark.parametrize("change, message", [
    ({"ssm_cfg": {"layer": "Mamba2"}}, "only Mamba1 mixers are supported"),
    ({"rms_norm": False}, "rms_norm is false"),
    ({"d_intermediate": 128}, "d_intermediate is 128"),
    ({"attn_layer_idx": [1]}, r"attn_layer_idx is \[1\]"),
    ({"ssm_cfg": {"headdim": 64}}, r"unknown ssm_cfg keys \['headdim'\]"),
    ({"n_layers": 3}, r"unknown keys \['n_layers'\]"),
    ({"d_model": 0}, "d_model is 0"),
])
def test_unsupported_mamba_ssm_configs_are_refused(change, message):
    written = {**config_to_dict(CONFIG, "mamba_ssm"), **change}
    with pytest.raises(ConversionError, match=message):
        config_from_dict(written, "mamba_ssm")


def test_unsupported_transformers_configs_are_refused():
    written = config_to_dict(CONFIG, "hf")
    with pytest.raises(ConversionError, match="intermediate_size is 50, expected expand"):
        config_from_dict({**written, "intermediate_size": 50})
    with pytest.raises(ConversionError, match="hidden_act is 'gelu'"):
        config_from_dict({**written, "hidden_act": "gelu"})
    with pytest.raises(ConversionError, match="model_type 'mamba2' is not Mamba-1"):
        detect_format({"model_type": "mamba2", "hidden_size": 8})


def test_wrong_parameters_are_named():
    params = random_params(CONFIG, seed=1)
    params["layers.0.mixer.D"] = params["layers.0.mixer.D"][:5]
    with pytest.raises(ConversionError, match=r"layers\.0\.mixer\.D has shape \(5,\), expected \(72,\)"):
        model_from_params(CONFIG, params)


def test_only_mamba_mixers_export_to_pytorch_formats():
    from ssmjax.convert import config_to_dict
    from ssmjax.models import MambaConfig

    config = MambaConfig(d_model=16, n_layer=1, vocab_size=37, mixer="s6")
    with pytest.raises(ValueError, match="config.mixer is 's6': only 'mamba' models have a hf format"):
        config_to_dict(config, "hf")
    assert config_to_dict(config, "ssmjax")


@pytest.mark.parametrize("mixer, extra", [("mamba", {}), ("s4", {"l_max": 8}),
                                          ("serpent_mamba", {"serpent_compression_rates": (2.0,)})])
def test_random_params_fill_every_mixer_from_the_modules_own_initialisers(mixer, extra):
    """random_params draws each parameter with the initialiser in its metadata, so every
    mixer's model loads them; the parameters that are not random are the module's own."""
    config = MambaConfig(d_model=12, n_layer=1, vocab_size=19, d_state=4, mixer=mixer, **extra)
    params = random_params(config, seed=3)
    model = model_from_params(config, params)
    assert sorted(model_params(model)) == sorted(params)
    again, other = random_params(config, seed=3), random_params(config, seed=4)
    assert all(np.array_equal(again[name], value) for name, value in params.items())
    assert not all(np.array_equal(other[name], value) for name, value in params.items())
    np.testing.assert_array_equal(params["layers.0.norm.weight"], 1.0)  # RMSNorm's, in every mixer
    if mixer == "mamba":
        np.testing.assert_allclose(np.exp(params["layers.0.mixer.A_log"]), np.tile(np.arange(1, 5), (24, 1)),
                                   rtol=1e-6)
    if mixer != "serpent_mamba":  # the most costly forward to compile; loading is what counts
        assert np.all(np.isfinite(np.asarray(model(np.zeros((1, 5), np.int32)))))
