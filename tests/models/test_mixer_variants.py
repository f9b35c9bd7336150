"""MambaLM with the other mixers of MambaConfig.mixer: the ungated S6 block, S4 and SeRpEnt."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import relative_error
from ssmjax.data import InductionHeads
from ssmjax.models import MambaConfig, MambaLM, count_params
from ssmjax.nn import MambaMixer
from ssmjax.train import ExperimentConfig, override

VOCAB = 20


def make_model(**kwargs) -> MambaLM:
    return MambaLM(MambaConfig(d_model=24, n_layer=2, vocab_size=VOCAB, d_state=8, **kwargs),
                   rngs=nnx.Rngs(0))


def ids(length: int = 13):
    return jax.random.randint(jax.random.key(1), (2, length), 0, VOCAB)


def test_gated_mixer_is_the_default_mixer():
    default, gated = MambaMixer(24, rngs=nnx.Rngs(5)), MambaMixer(24, gated=True, rngs=nnx.Rngs(5))
    for a, b in zip(jax.tree.leaves(nnx.state(default, nnx.Param)),
                    jax.tree.leaves(nnx.state(gated, nnx.Param))):
        np.testing.assert_array_equal(a, b)
    x = jax.random.normal(jax.random.key(2), (2, 7, 24))
    np.testing.assert_array_equal(default(x)[0], gated(x)[0])


def test_ungated_mixer_drops_the_z_half_and_steps_like_its_sequence_form():
    gated, ungated = MambaMixer(24, rngs=nnx.Rngs(5)), MambaMixer(24, gated=False, rngs=nnx.Rngs(5))
    assert count_params(gated) - count_params(ungated) == 24 * 48  # in_proj's z columns
    x = jax.random.normal(jax.random.key(2), (2, 9, 24))
    full, _ = ungated(x)
    assert not np.allclose(full, gated(x)[0])
    cache = ungated.init_cache(2)
    for t in range(9):
        out_t, cache = ungated.step(x[:, t], cache)
        assert relative_error(out_t, full[:, t]) < 1e-5


def test_default_model_is_unchanged_by_the_mixer_field():
    plain = make_model()
    mamba = make_model(mixer="mamba")
    for a, b in zip(jax.tree.leaves(nnx.state(plain, nnx.Param)),
                    jax.tree.leaves(nnx.state(mamba, nnx.Param))):
        np.testing.assert_array_equal(a, b)
    assert all(layer.mixer.gated for layer in plain.layers)


@pytest.mark.parametrize("mixer, extra", [("s6", {}), ("s4", {"l_max": 16}),
                                          ("serpent_mamba", {})])
def test_variants_run_forward(mixer, extra):
    model = make_model(mixer=mixer, **extra)
    logits = model(ids())
    assert logits.shape == (2, 13, VOCAB) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    assert not np.allclose(logits, make_model()(ids()))


def test_s6_model_has_fewer_parameters_and_a_step_form():
    model = make_model(mixer="s6")
    assert count_params(make_model()) - count_params(model) == 2 * 24 * 48
    tokens = ids(6)
    full = model(tokens)
    cache = model.init_cache(2)
    for t in range(6):
        logits_t, cache = model.step(tokens[:, t], cache)
        assert relative_error(logits_t, full[:, t]) < 1e-5


def test_s4_model_is_the_gateless_block_with_s4_and_steps_like_its_forward():
    """Table 1's S4 row: in_proj → conv → SiLU → S4 (no head of its own) → out_proj."""
    from ssmjax.nn import S4, NoGateBlock

    model = make_model(mixer="s4", l_max=16)
    mixer = model.layers[0].mixer
    assert isinstance(mixer, NoGateBlock) and isinstance(mixer.layer, S4)
    assert mixer.layer.d_model == 2 * mixer.d_model and mixer.layer.head.proj is None
    tokens = ids(6)
    full = model(tokens)
    prefix, cache = model(tokens[:, :3], return_cache=True)
    assert relative_error(prefix, full[:, :3]) < 1e-5
    for t in range(3, 6):
        logits_t, cache = model.step(tokens[:, t], cache)
        assert relative_error(logits_t, full[:, t]) < 1e-5, t


def test_serpent_model_refuses_caches():
    model = make_model(mixer="serpent_mamba")
    with pytest.raises(ValueError, match="serpent_mamba.*no recurrent form"):
        model.init_cache(2)
    with pytest.raises(ValueError, match="no recurrent form"):
        model(ids(), return_cache=True)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mixer="lstm"), "mixer is 'lstm'"),
    (dict(mixer="s4"), "l_max is None"),
    (dict(mixer="s4", l_max=0), "l_max is 0"),
])
def test_bad_mixer_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MambaConfig(d_model=24, n_layer=1, vocab_size=VOCAB, **kwargs)


def test_experiment_rejects_an_s4_kernel_shorter_than_the_task():
    with pytest.raises(ValueError, match="model.l_max is 16, shorter than the task's sequences of length 32"):
        ExperimentConfig(name="x", task=InductionHeads(sequence_length=32),
                         model=MambaConfig(d_model=24, n_layer=1, vocab_size=VOCAB, mixer="s4", l_max=16))


def test_mixer_fields_survive_json_and_command_line_overrides():
    config = MambaConfig(d_model=24, n_layer=1, vocab_size=VOCAB, mixer="serpent_mamba")
    read_back = MambaConfig(**json.loads(json.dumps(dataclasses.asdict(config))))
    assert read_back == config and hash(read_back) == hash(config)
    experiment = ExperimentConfig(name="x", task=InductionHeads(sequence_length=32), model=config)
    changed = override(experiment, ["model.serpent_compression_rates=2, 3", "model.mixer=s6",
                                    "task.sequence_length=64"])
    assert changed.model.serpent_compression_rates == (2.0, 3.0) and changed.model.mixer == "s6"
    assert changed.task == InductionHeads(sequence_length=64)
    with pytest.raises(ValueError, match="serpent_compression_rates=2,x: cannot parse"):
        override(experiment, ["model.serpent_compression_rates=2,x"])
    with pytest.raises(ValueError, match="every rate"):
        override(experiment, ["model.serpent_compression_rates=0.5"])
