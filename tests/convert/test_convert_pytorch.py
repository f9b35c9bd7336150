"""Import/export against real PyTorch models: a small random transformers MambaForCausalLM,
and a mamba-ssm MambaLMHeadModel state dict built from its tensors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from conftest import relative_error  # noqa: E402
from ssmjax.convert import (ConversionError, load_pretrained, model_params,  # noqa: E402
                            read_state_dict, save_pretrained)
from ssmjax.generate import SamplingConfig, generate  # noqa: E402

VOCAB_ROWS = 64
PROMPT, NEW = 8, 32  # a power-of-two prompt is prefilled in one piece


def random_hf_model(tie: bool = True, seed: int = 0):
    """A small MambaForCausalLM with every tensor perturbed (so no mapping error hides behind
    a constant initialisation) and out_proj enlarged (so greedy text does not repeat one token)."""
    torch.manual_seed(seed)
    config = transformers.MambaConfig(vocab_size=VOCAB_ROWS, hidden_size=32, num_hidden_layers=2,
                                      state_size=8, expand=2, conv_kernel=4, tie_word_embeddings=tie,
                                      eos_token_id=None, bos_token_id=None, pad_token_id=None)
    model = transformers.MambaForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "A_log" not in name:
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
        for layer in model.backbone.layers:
            layer.mixer.out_proj.weight.mul_(3.0)
    return model


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids).long()).logits.float().numpy()


def torch_greedy(model, prompt: np.ndarray, vocab: int) -> np.ndarray:
    """transformers' own greedy generation (with its recurrent cache), over the first
    ``vocab`` tokens: the embedding rows past the vocabulary are padding."""
    padding_rows = list(range(vocab, model.config.vocab_size)) or None
    with torch.no_grad():
        out = model.generate(torch.from_numpy(prompt).long(), max_new_tokens=NEW, min_new_tokens=NEW,
                             do_sample=False, suppress_tokens=padding_rows)
    return out[:, prompt.shape[1]:].numpy()


def ssmjax_greedy(model, prompt: np.ndarray) -> np.ndarray:
    out = generate(model, jnp.asarray(prompt), jax.random.key(0), max_new_tokens=NEW,
                   sampling=SamplingConfig.make_greedy())
    return np.asarray(out.tokens)


@pytest.fixture(scope="module")
def hf_model():
    return random_hf_model()


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, 61, (3, 24)).astype(np.int32)


@pytest.fixture(scope="module")
def imported(hf_dir):
    return load_pretrained(hf_dir)


def test_transformers_safetensors_logits_and_greedy_text_match(hf_model, hf_dir, imported, tokens):
    assert (hf_dir / "model.safetensors").is_file()
    model, info = imported
    assert info.format == "hf" and model.config.vocab_size == VOCAB_ROWS
    assert relative_error(model(jnp.asarray(tokens)), torch_logits(hf_model, tokens)) < 1e-4
    prompt = tokens[:2, :PROMPT]
    expected = torch_greedy(hf_model, prompt, VOCAB_ROWS)
    assert len(set(expected[0].tolist())) > 8  # a text, not one token repeated
    np.testing.assert_array_equal(ssmjax_greedy(model, prompt), expected)


def test_transformers_bin_reads_like_safetensors(hf_model, imported, tmp_path):
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(hf_model.config.to_dict()))
    from_bin, _ = load_pretrained(tmp_path)
    reference = model_params(imported[0])
    for name, value in model_params(from_bin).items():
        np.testing.assert_array_equal(value, reference[name], err_msg=name)


def mamba_ssm_checkpoint(hf_model, directory, vocab_size: int):
    """What MambaLMHeadModel(...).state_dict() and its config.json look like for these weights."""
    state_dict = {name.replace("backbone.embeddings.", "backbone.embedding."): tensor.clone()
                  for name, tensor in hf_model.state_dict().items()}
    state_dict["lm_head.weight"] = state_dict["backbone.embedding.weight"]  # tied: one tensor
    torch.save(state_dict, directory / "pytorch_model.bin")
    config = {"d_model": 32, "n_layer": 2, "vocab_size": vocab_size,
              "ssm_cfg": {"d_state": 8, "d_conv": 4, "expand": 2}, "rms_norm": True,
              "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8,
              "tie_embeddings": True}
    (directory / "config.json").write_text(json.dumps(config))
    return state_dict


def test_mamba_ssm_state_dict_logits_and_greedy_text_match(hf_model, tmp_path, tokens):
    mamba_ssm_checkpoint(hf_model, tmp_path, vocab_size=61)  # 61 tokens, 64 embedding rows
    model, info = load_pretrained(tmp_path)
    assert info.format == "mamba_ssm" and model.config.padded_vocab_size == VOCAB_ROWS
    logits = model(jnp.asarray(tokens))
    assert logits.shape[-1] == 61
    assert relative_error(logits, torch_logits(hf_model, tokens)[..., :61]) < 1e-4
    prompt = tokens[:2, :PROMPT]
    expected = torch_greedy(hf_model, prompt, 61)
    assert len(set(expected[0].tolist())) > 8
    np.testing.assert_array_equal(ssmjax_greedy(model, prompt), expected)


def test_export_to_transformers_round_trips(hf_model, imported, tmp_path, tokens):
    model, _ = imported
    save_pretrained(model, tmp_path, "hf")
    reloaded = transformers.MambaForCausalLM.from_pretrained(tmp_path).eval()
    expected = hf_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
    np.testing.assert_array_equal(torch_logits(reloaded, tokens), torch_logits(hf_model, tokens))
    again, _ = load_pretrained(tmp_path)
    for name, value in model_params(again).items():
        np.testing.assert_array_equal(value, model_params(model)[name], err_msg=name)


def test_export_to_mamba_ssm_round_trips(hf_model, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    expected = mamba_ssm_checkpoint(hf_model, source, vocab_size=61)
    model, _ = load_pretrained(source)
    save_pretrained(model, tmp_path / "out", "mamba_ssm")
    assert (tmp_path / "out" / "pytorch_model.bin").is_file()
    written = torch.load(tmp_path / "out" / "pytorch_model.bin", weights_only=True)
    assert sorted(written) == sorted(expected)
    for name, tensor in written.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vocab_size"] == 61 and config["ssm_cfg"]["d_state"] == 8 and config["rms_norm"]


def test_untied_head_imports(tmp_path, tokens):
    hf_model = random_hf_model(tie=False, seed=3)
    hf_model.save_pretrained(tmp_path)
    assert "lm_head.weight" in read_state_dict(tmp_path)
    model, _ = load_pretrained(tmp_path)
    assert model.lm_head is not None
    assert relative_error(model(jnp.asarray(tokens)), torch_logits(hf_model, tokens)) < 1e-4


def test_bfloat16_bin_checkpoint_loads(hf_model, tmp_path, imported):
    state_dict = {k: v.to(torch.bfloat16) for k, v in hf_model.state_dict().items()}
    torch.save(state_dict, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(hf_model.config.to_dict()))
    model, _ = load_pretrained(tmp_path)
    reference = model_params(imported[0])
    for name, value in model_params(model).items():
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, reference[name], rtol=1e-2, atol=1e-2, err_msg=name)


def test_broken_checkpoints_are_named(hf_model, tmp_path):
    def write(state_dict, config=None):
        torch.save(state_dict, tmp_path / "pytorch_model.bin")
        (tmp_path / "config.json").write_text(json.dumps(config or hf_model.config.to_dict()))

    good = dict(hf_model.state_dict())
    write({k: v for k, v in good.items() if k != "backbone.layers.1.mixer.D"})
    with pytest.raises(ConversionError, match=r"missing tensors: backbone\.layers\.1\.mixer\.D"):
        load_pretrained(tmp_path)
    write({**good, "backbone.layers.0.mixer.extra": torch.zeros(3)})
    with pytest.raises(ConversionError, match=r"unexpected tensors: backbone\.layers\.0\.mixer\.extra"):
        load_pretrained(tmp_path)
    write({**good, "backbone.layers.0.mixer.x_proj.weight": good["backbone.layers.0.mixer.x_proj.weight"].T})
    with pytest.raises(ConversionError, match=r"backbone\.layers\.0\.mixer\.x_proj\.weight has shape "
                                              r"\(64, 18\), expected \(18, 64\)"):
        load_pretrained(tmp_path)
    write(good, {**hf_model.config.to_dict(), "state_size": 16})
    with pytest.raises(ConversionError, match=r"A_log has shape \(64, 8\), expected \(64, 16\) "
                                              r"\(d_inner, d_state\)"):
        load_pretrained(tmp_path)
    write({**good, "lm_head.weight": good["lm_head.weight"] + 1})
    with pytest.raises(ConversionError, match="ties the LM head to the embedding, but lm_head.weight"):
        load_pretrained(tmp_path)
    mamba_ssm_names = {k.replace("embeddings", "embedding"): v for k, v in good.items()}
    write(mamba_ssm_names)
    with pytest.raises(ConversionError, match=r"names of the mamba_ssm format\?"):
        load_pretrained(tmp_path)


def test_bin_without_torch_says_what_to_install(hf_model, tmp_path, monkeypatch):
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(hf_model.config.to_dict()))
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    with pytest.raises(ImportError, match="needs the optional dependency 'torch': pip install torch"):
        load_pretrained(tmp_path)
