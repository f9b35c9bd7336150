"""MambaLM: parameter count of mamba-130m, and the recurrent view equal to the parallel one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import relative_error
from ssmjax.models import MambaConfig, MambaLM, count_params


def expected_mamba_param_count(d_model, n_layer, vocab, d_state=16, d_conv=4, expand=2):
    """mamba-ssm's MambaLMHeadModel parameters, counted tensor by tensor from its modules."""
    d_inner = expand * d_model
    dt_rank = -(-d_model // 16)
    per_layer = (d_model * 2 * d_inner          # in_proj.weight
                 + d_inner * d_conv + d_inner    # conv1d.weight, conv1d.bias
                 + d_inner * (dt_rank + 2 * d_state)  # x_proj.weight
                 + dt_rank * d_inner + d_inner   # dt_proj.weight, dt_proj.bias
                 + d_inner * d_state + d_inner   # A_log, D
                 + d_inner * d_model             # out_proj.weight
                 + d_model)                      # norm.weight
    padded_vocab = -(-vocab // 8) * 8
    return padded_vocab * d_model + n_layer * per_layer + d_model  # tied embedding, norm_f


def test_mamba_130m_parameter_count():
    config = MambaConfig.mamba_130m()
    model = nnx.eval_shape(lambda: MambaLM(config, rngs=nnx.Rngs(0)))
    assert config.padded_vocab_size == 50280
    assert count_params(model) == expected_mamba_param_count(768, 24, 50277) == 129_135_360


def test_untied_head_adds_one_matrix():
    tied = nnx.eval_shape(lambda: MambaLM(MambaConfig(d_model=32, n_layer=2, vocab_size=100), rngs=nnx.Rngs(0)))
    untied = nnx.eval_shape(lambda: MambaLM(MambaConfig(d_model=32, n_layer=2, vocab_size=100,
                                                        tie_embeddings=False), rngs=nnx.Rngs(0)))
    assert count_params(untied) - count_params(tied) == 104 * 32


@pytest.mark.parametrize("residual_in_fp32", [True, False])
def test_forward_equals_token_by_token(residual_in_fp32):
    config = MambaConfig(d_model=32, n_layer=3, vocab_size=61, residual_in_fp32=residual_in_fp32)
    model = MambaLM(config, rngs=nnx.Rngs(1))
    ids = jax.random.randint(jax.random.key(2), (3, 17), 0, config.vocab_size)
    logits = model(ids)
    assert logits.shape == (3, 17, 61) and logits.dtype == jnp.float32
    step = nnx.jit(lambda m, token, cache: m.step(token, cache))
    cache = model.init_cache(3)
    for t in range(17):
        logits_t, cache = step(model, ids[:, t], cache)
        assert relative_error(logits_t, logits[:, t]) < 1e-5, t


def test_prefill_then_steps_equal_forward():
    config = MambaConfig(d_model=32, n_layer=2, vocab_size=50)
    model = MambaLM(config, rngs=nnx.Rngs(3))
    ids = jax.random.randint(jax.random.key(4), (2, 12), 0, 50)
    logits = model(ids)
    prefix_logits, cache = model(ids[:, :8], return_cache=True)
    assert relative_error(prefix_logits, logits[:, :8]) < 1e-5
    for t in range(8, 12):
        logits_t, cache = model.step(ids[:, t], cache)
        assert relative_error(logits_t, logits[:, t]) < 1e-5


def test_bfloat16_model_is_close_to_float32():
    ids = jax.random.randint(jax.random.key(5), (2, 16), 0, 40)
    fp32 = MambaLM(MambaConfig(d_model=32, n_layer=2, vocab_size=40), rngs=nnx.Rngs(6))
    bf16 = MambaLM(MambaConfig(d_model=32, n_layer=2, vocab_size=40, dtype="bfloat16"), rngs=nnx.Rngs(6))
    logits = bf16(ids)
    assert logits.dtype == jnp.float32
    assert relative_error(logits, fp32(ids)) < 3e-2


def test_model_learns_under_jit_with_gradients_for_every_parameter():
    import optax

    config = MambaConfig(d_model=16, n_layer=1, vocab_size=11)
    model = MambaLM(config, rngs=nnx.Rngs(7))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    ids = jax.random.randint(jax.random.key(8), (4, 10), 0, 11)

    def loss_fn(m):
        logits = m(ids[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

    @nnx.jit
    def train_step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss, grads

    first, grads = train_step(model, optimizer)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
    for _ in range(30):
        loss, _ = train_step(model, optimizer)
    assert float(loss) < 0.7 * float(first)


def test_config_and_inputs_are_checked():
    with pytest.raises(ValueError, match="dtype is 'float64'"):
        MambaConfig(dtype="float64")
    with pytest.raises(ValueError, match="scan_backend is 'cuda'"):
        MambaConfig(scan_backend="cuda")
    with pytest.raises(ValueError, match="n_layer is 0"):
        MambaConfig(n_layer=0)
    model = MambaLM(MambaConfig(d_model=16, n_layer=1, vocab_size=11), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"input_ids has shape \(4,\) and dtype int32, expected integer ids of shape \(batch, length\)"):
        model(jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match=r"input_ids has shape \(2, 3\) and dtype float32"):
        model(jnp.zeros((2, 3)))


@pytest.mark.parametrize("mixer, extra", [("mamba", {}), ("s4", {"l_max": 9})])
def test_masked_prefill_of_prompts_of_different_lengths_continues_each_prompt(mixer, extra):
    """One masked call prefills prompts of lengths 8, 5 and 2; each row's logits are its own
    prompt's (zero past it), and a step from the cache continues each prompt as if alone."""
    config = MambaConfig(d_model=16, n_layer=2, vocab_size=23, d_state=4, mixer=mixer, **extra)
    model = MambaLM(config, rngs=nnx.Rngs(9))
    lengths = np.array([8, 5, 2])
    ids = jax.random.randint(jax.random.key(10), (3, 8), 0, 23)
    mask = jnp.arange(8) < jnp.asarray(lengths)[:, None]
    logits, cache = model(ids, mask=mask, return_cache=True)
    next_ids = jnp.asarray([3, 7, 11])
    next_logits, _ = model.step(next_ids, cache)
    forward = nnx.jit(lambda model, ids: model(ids))
    for row, length in enumerate(lengths):
        alone = forward(model, jnp.concatenate([ids[row:row + 1, :length], next_ids[row:row + 1, None]], 1))
        assert relative_error(logits[row, :length], alone[0, :length]) < 1e-5, row
        # S4's step view reads C̄ = C̃ (I − Ā^L)⁻¹ from a solve: a few 1e-6 more rounding.
        assert relative_error(next_logits[row], alone[0, length]) < 3e-5, row
    assert np.all(np.asarray(logits)[~np.asarray(mask)] == 0)


def test_model_refuses_packed_sequences_and_caches_of_the_wrong_depth():
    model = MambaLM(MambaConfig(d_model=16, n_layer=2, vocab_size=11), rngs=nnx.Rngs(0))
    ids = jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(ValueError, match=r"segment_ids has shape \(2, 3\), expected None"):
        model(ids, segment_ids=jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"cache has 1 layers, expected one per layer \(2\)"):
        model(ids, cache=model.init_cache(2)[:1])
