"""Every parameter of every module carries logical axes of its rank, an optimiser group and the
initialiser that drew it; the groups of named parameters; and each initialiser draws one
distribution on the device and on the host."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssmjax.models import MambaConfig, MambaLM
from ssmjax.nn import S4, S4D, S5, LiquidS4, SeRpEntBlock
from ssmjax.nn.initializers import (ONES, ComplexConstant, Constant, FanInUniform, Initializer,
                                    LecunNormal, Normal, Uniform)
from ssmjax.nn.lti import ComplexNormal, Spectrum
from ssmjax.nn.mamba import MambaALog, MambaDeltaBias
from ssmjax.nn.partitioning import INITIALIZER, LOGICAL_AXES, OPTIMIZER_GROUP, OPTIMIZER_GROUPS, axes
from ssmjax.nn.s4 import HiPPOLegSVector
from ssmjax.nn.s5 import S5InputMatrix, S5OutputMatrix

LM = dict(d_model=12, n_layer=2, vocab_size=19, d_state=4)
LM_MIXERS = {"mamba": dict(), "mamba_untied_biased": dict(tie_embeddings=False, bias=True),
             "s6": dict(mixer="s6"), "s4": dict(mixer="s4", l_max=8),
             "serpent_mamba": dict(mixer="serpent_mamba", serpent_compression_rates=(2.0,))}
TINY = dict(d_state=4)
LAYERS = {
    "s4": lambda: S4(6, l_max=8, **TINY, rngs=nnx.Rngs(0)),
    "s4_bidirectional_linear": lambda: S4(6, l_max=8, **TINY, bidirectional=True, output="linear",
                                          rngs=nnx.Rngs(0)),
    "liquid_s4": lambda: LiquidS4(6, l_max=8, **TINY, rngs=nnx.Rngs(0)),
    "s4d_inv": lambda: S4D(6, **TINY, init="inv", output="half_glu", rngs=nnx.Rngs(0)),
    "s5_bidirectional": lambda: S5(6, d_state=8, blocks=2, bidirectional=True, rngs=nnx.Rngs(0)),
    **{f"serpent_{ssm}": (lambda ssm=ssm: SeRpEntBlock(
        12, compression_rates=(2.0,), window=3, num_basis=4, ssm=ssm, l_max=16, norm="batch",
        decompress_window=2, ssm_kwargs=dict(d_state=4, bidirectional=ssm != "mamba") if ssm != "mamba"
        else dict(d_state=4), rngs=nnx.Rngs(0)))
       for ssm in ("mamba", "s4", "s4d", "s5", "liquid_s4")},
}


def parameters(module):
    return {"/".join(map(str, path)): variable
            for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def check_metadata(module, concrete: bool) -> None:
    rng = np.random.default_rng(0)
    params = parameters(module)
    assert len(params) > 5
    for name, variable in params.items():
        metadata, value = variable.get_metadata(), variable.get_value()
        assert len(metadata.get(LOGICAL_AXES, ())) == value.ndim, name
        assert metadata.get(OPTIMIZER_GROUP) in OPTIMIZER_GROUPS, name
        init = metadata.get(INITIALIZER)
        assert isinstance(init, Initializer), name
        sample = init.sample(rng, value.shape)
        assert sample.shape == value.shape and np.all(np.isfinite(sample)), name
        if concrete and not init.random:  # a deterministic value is the module's own
            np.testing.assert_allclose(np.asarray(value), sample, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("mixer", list(LM_MIXERS))
def test_every_parameter_of_every_language_model_is_marked(mixer):
    config = MambaConfig(**LM, **LM_MIXERS[mixer])
    check_metadata(nnx.eval_shape(lambda: MambaLM(config, rngs=nnx.Rngs(0))), concrete=False)


@pytest.mark.parametrize("name", list(LAYERS))
def test_every_parameter_of_every_layer_is_marked(name):
    check_metadata(LAYERS[name](), concrete=True)


def test_groups_of_named_parameters():
    models = {"mamba": MambaConfig(**LM, **LM_MIXERS["mamba_untied_biased"]),
              "s4": MambaConfig(**LM, mixer="s4", l_max=8)}
    params = {kind: parameters(nnx.eval_shape(lambda config=config: MambaLM(config, rngs=nnx.Rngs(0))))
              for kind, config in models.items()}
    expected = {
        ("mamba", "embedding/embedding"): "decay", ("mamba", "lm_head/kernel"): "decay",
        ("mamba", "norm_f/weight"): "no_decay", ("mamba", "layers/0/norm/weight"): "no_decay",
        **{("mamba", f"layers/0/mixer/{name}"): "no_decay"
           for name in ("A_log", "D", "dt_bias", "conv_bias", "in_proj/bias", "out_proj/bias")},
        **{("mamba", f"layers/0/mixer/{name}"): "decay"
           for name in ("in_proj/kernel", "conv_weight", "x_proj/kernel", "dt_proj/kernel", "out_proj/kernel")},
        **{("s4", f"layers/1/mixer/layer/{name}"): "ssm"
           for name in ("log_neg_lambda_real", "lambda_imag", "P", "B", "log_dt")},
        ("s4", "layers/1/mixer/layer/C"): "decay", ("s4", "layers/1/mixer/layer/D"): "no_decay",
        ("s4", "layers/1/mixer/conv_weight"): "decay", ("s4", "layers/1/mixer/conv_bias"): "no_decay",
    }
    for (kind, name), group in expected.items():
        assert params[kind][name].get_metadata()[OPTIMIZER_GROUP] == group, (kind, name)
    s5 = parameters(LAYERS["s5_bidirectional"]())
    assert {name: s5[name].get_metadata()[OPTIMIZER_GROUP] for name in ("B", "log_step", "C", "D")} == \
        {"B": "ssm", "log_step": "ssm", "C": "decay", "D": "no_decay"}
    serpent = parameters(LAYERS["serpent_s4d"]())
    groups = {name: serpent[name].get_metadata()[OPTIMIZER_GROUP] for name in (
        "resampled/0/delta_proj/kernel", "resampled/0/delta_proj/bias", "resampled/0/compression/means",
        "resampled/0/compression/kernel", "resampled/0/compression/bias", "norm/scale", "norm/bias",
        "base/proj/kernel", "resampled/0/inner/lambda_imag")}
    assert groups == {"resampled/0/delta_proj/kernel": "decay", "resampled/0/delta_proj/bias": "no_decay",
                      "resampled/0/compression/means": "no_decay", "resampled/0/compression/kernel": "decay",
                      "resampled/0/compression/bias": "no_decay", "norm/scale": "no_decay",
                      "norm/bias": "no_decay", "base/proj/kernel": "decay",
                      "resampled/0/inner/lambda_imag": "ssm"}
    with pytest.raises(ValueError, match="group is 'fast', expected one of"):
        axes("embed", group="fast")


def two_sample_ks(a: np.ndarray, b: np.ndarray) -> float:
    """The Kolmogorov–Smirnov distance between the empirical distributions of a and b, both
    rounded to 1e-5 (a float32 and a float64 draw of one atom, as Δ's floor, then coincide)."""
    a, b = (np.sort(np.round(np.asarray(x, np.float64), 5)) for x in (a, b))
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / a.size
                               - np.searchsorted(b, grid, side="right") / b.size)))


RANDOM = [(Uniform(-0.3, 0.7), (64, 32)), (Uniform.symmetric(0.5), (4096,)), (FanInUniform(0.5), (64, 32)),
          (LecunNormal(), (64, 32)), (Normal(0.02), (64, 32)), (ComplexNormal(), (2, 16, 32, 2)),
          (MambaDeltaBias(0.001, 0.1, 1e-4), (2048,)), (MambaDeltaBias(0.001, 0.1, 0.01), (2048,)),
          (S5InputMatrix(2), (16, 8, 2)), (S5OutputMatrix(1), (2, 16, 8, 2))]


@pytest.mark.parametrize("init, shape", RANDOM, ids=lambda value: type(value).__name__)
def test_random_initialisers_draw_one_distribution_on_device_and_host(init, shape):
    """Two-sample KS over ≥ 8192 draws each; its 0.1% critical value is ≈ 0.031 there."""
    draws = -(-8192 // int(np.prod(shape)))
    device = np.concatenate([np.ravel(init(jax.random.key(seed), shape, jnp.float32)) for seed in range(draws)])
    rng = np.random.default_rng(0)
    host = np.concatenate([np.ravel(init.sample(rng, shape)) for _ in range(draws)])
    assert two_sample_ks(device, host) < 0.035


DETERMINISTIC = [(ONES, (5,)), (Constant(0.25), (3, 2)), (ComplexConstant(1.0), (3, 4, 2)),
                 (MambaALog(), (6, 16)), (Spectrum("legs", "log_neg_real"), (3, 8)),
                 (Spectrum("legs", "imag"), (3, 8)), (Spectrum("s4d_lin", "imag"), (3, 8)),
                 (Spectrum("s4d_inv", "imag"), (3, 8)), (Spectrum("hippo_n", "log_neg_real", 2), (8,)),
                 (HiPPOLegSVector("P"), (3, 1, 8, 2)), (HiPPOLegSVector("B"), (3, 8, 2))]


@pytest.mark.parametrize("init, shape", DETERMINISTIC, ids=lambda value: type(value).__name__)
def test_deterministic_initialisers_are_the_same_on_device_and_host(init, shape):
    assert not init.random
    np.testing.assert_allclose(np.asarray(init(None, shape)), init.sample(None, shape), rtol=1e-6, atol=1e-7)
