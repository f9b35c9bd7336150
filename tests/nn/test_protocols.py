"""Every sequence mixer meets the SequenceMixer protocol: a pair from every call, padding that
never reaches a valid output and zeros at padded positions, a masked prefill whose cache is
the step view's state after each row's last valid position, and the same refusals (packed
sequences; caches and steps of mixers that are not causal)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import TOLERANCE, compiled_module, real_view, relative_error
from ssmjax.nn import (S4, S4D, S5, LiquidS4, MambaMixer, NoGateBlock, ResidualBlock, SeRpEntBlock,
                       SequenceMixer)
from ssmjax.nn.protocols import cache_batch_size

BATCH, LENGTH, WIDTH = 3, 7, 8
LENGTHS = (7, 4, 1)
STATE = dict(d_state=4)


def rngs(seed=0):
    return nnx.Rngs(seed)


# name → (builder, causal). Tiny widths: each case compiles two programs once.
MIXERS = {
    "mamba": (lambda: MambaMixer(WIDTH, **STATE, rngs=rngs()), True),
    "mamba_ungated": (lambda: MambaMixer(WIDTH, **STATE, gated=False, rngs=rngs()), True),
    "no_gate_s4": (lambda: NoGateBlock(WIDTH, S4(2 * WIDTH, l_max=LENGTH, **STATE, activation=None,
                                                 output="none", rngs=rngs(1)), rngs=rngs()), True),
    "s4": (lambda: S4(WIDTH, l_max=LENGTH, **STATE, rngs=rngs()), True),
    "liquid_s4_kb": (lambda: LiquidS4(WIDTH, l_max=LENGTH, **STATE, liquid_order=3, liquid_kernel="kb",
                                      rngs=rngs()), True),
    "s4d": (lambda: S4D(WIDTH, **STATE, rngs=rngs()), True),
    "s5": (lambda: S5(WIDTH, **STATE, rngs=rngs()), True),
    "residual_s4d": (lambda: ResidualBlock(S4D(WIDTH, **STATE, rngs=rngs())), True),
    "liquid_s4_bidirectional": (lambda: LiquidS4(WIDTH, l_max=LENGTH, **STATE, bidirectional=True,
                                                 rngs=rngs()), False),
    "s4d_bidirectional": (lambda: S4D(WIDTH, **STATE, bidirectional=True, rngs=rngs()), False),
    "s5_bidirectional": (lambda: S5(WIDTH, **STATE, bidirectional=True, rngs=rngs()), False),
    "no_gate_s5_bidirectional": (lambda: NoGateBlock(WIDTH, S5(2 * WIDTH, **STATE, bidirectional=True,
                                                               rngs=rngs(1)), rngs=rngs()), False),
    "serpent": (lambda: SeRpEntBlock(WIDTH, compression_rates=(2.0,), window=3, num_basis=4,
                                     ssm_kwargs=STATE, rngs=rngs()), False),
}
CAUSAL = [name for name, (_, causal) in MIXERS.items() if causal]
NOT_CAUSAL = [name for name, (_, causal) in MIXERS.items() if not causal]


def inputs():
    """``x``, the same with large noise at the padded positions, and the mask of LENGTHS."""
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (BATCH, LENGTH, WIDTH))
    mask = jnp.arange(LENGTH) < jnp.asarray(LENGTHS)[:, None]
    noisy = jnp.where(mask[..., None], x, 100.0 * jax.random.normal(keys[1], x.shape))
    return x, noisy, mask


@compiled_module
def masked_call(mixer, x, noisy, mask):
    """Clean and noisy rows in one masked call; a prefill cache when the mixer is causal."""
    both, both_mask = jnp.concatenate([x, noisy]), jnp.concatenate([mask, mask])
    return mixer(both, mask=both_mask, return_cache=mixer.causal)


@compiled_module
def steps(mixer, x):
    """The recurrent view: outputs and the cache after every position, time first."""
    def step(cache, x_t):
        out, cache = mixer.step(x_t, cache)
        return cache, (out, cache)

    _, (outs, caches) = jax.lax.scan(step, mixer.init_cache(x.shape[0]), jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(outs, 0, 1), caches


@pytest.mark.parametrize("name", list(MIXERS))
def test_every_mixer_meets_the_protocol_and_padding_never_reaches_valid_outputs(name):
    build, causal = MIXERS[name]
    mixer = build()
    assert isinstance(mixer, SequenceMixer)
    assert mixer.d_model == WIDTH and mixer.causal is causal
    x, noisy, mask = inputs()
    out, cache = masked_call(mixer, x, noisy, mask)
    assert out.shape == (2 * BATCH, LENGTH, WIDTH)
    clean, dirty = np.asarray(out[:BATCH]), np.asarray(out[BATCH:])
    valid = np.asarray(mask)
    assert np.all(np.isfinite(clean)) and np.abs(clean[valid]).min() > 0
    np.testing.assert_allclose(dirty[valid], clean[valid], rtol=0, atol=1e-6)
    assert np.all(clean[~valid] == 0) and np.all(dirty[~valid] == 0)
    if not causal:
        assert cache is None
        return
    assert cache_batch_size(cache) == 2 * BATCH
    assert all(leaf.shape[0] == 2 * BATCH for leaf in jax.tree.leaves(cache))
    step_outs, step_caches = steps(mixer, x)
    assert relative_error(clean[valid], np.asarray(step_outs)[valid]) < TOLERANCE[jnp.float32]
    # The prefill's cache is the state after each row's last valid position.
    for row, length in enumerate(LENGTHS):
        for prefill, stepped in zip(jax.tree.leaves(cache), jax.tree.leaves(step_caches)):
            assert relative_error(real_view(prefill[row]), real_view(stepped[length - 1, row])) < \
                TOLERANCE[jnp.float32], (row, length)


def test_unmasked_call_returns_the_output_and_no_cache():
    mixer = MIXERS["mamba"][0]()
    x, _, _ = inputs()
    out, cache = mixer(x)
    assert out.shape == x.shape and cache is None


@pytest.mark.parametrize("name", NOT_CAUSAL)
def test_mixers_that_are_not_causal_refuse_caches_and_steps(name):
    mixer = MIXERS[name][0]()
    x, _, _ = inputs()
    message = f"needs a causal mixer with a recurrent form; this {type(mixer).__name__} is not causal"
    with pytest.raises(ValueError, match="return_cache " + message):
        mixer(x, return_cache=True)
    with pytest.raises(ValueError, match="init_cache " + message):
        mixer.init_cache(BATCH)
    with pytest.raises(ValueError, match="step " + message):
        mixer.step(x[:, 0], None)
    with pytest.raises(ValueError, match="cache " + message):
        mixer(x, cache=object())


def test_every_mixer_refuses_packed_sequences_and_bad_masks_alike():
    """One message from one place for segment_ids (it goes away there once the mixers pack)."""
    x, _, mask = inputs()
    segment_ids = jnp.zeros((BATCH, LENGTH), jnp.int32)
    for name in ("mamba", "no_gate_s4", "s5_bidirectional", "residual_s4d", "serpent"):
        mixer = MIXERS[name][0]()
        with pytest.raises(ValueError, match=r"segment_ids has shape \(3, 7\), expected None: the "
                                             "mixers do not support packed sequences yet"):
            mixer(x, segment_ids=segment_ids)
        with pytest.raises(ValueError, match=r"mask has shape \(3, 6\) and dtype bool, expected bool "
                                             r"\(batch, length\) = \(3, 7\)"):
            mixer(x, mask=mask[:, 1:])
        with pytest.raises(ValueError, match="mask has shape .* and dtype int32"):
            mixer(x, mask=mask.astype(jnp.int32))
        with pytest.raises(ValueError, match=r"(hidden|residual) has shape \(3, 7, 5\), expected \(batch, length, 8\)"):
            mixer(x[..., :5])
