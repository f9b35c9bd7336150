"""The generic diagonal linear recurrence, real and complex, against a NumPy loop."""

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import relative_error
from ssmjax.ops import linear_recurrence


def as_real(x):
    x = np.asarray(x)
    return np.stack([x.real, x.imag]) if np.iscomplexobj(x) else x


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
@pytest.mark.parametrize("length", [1, 11])
def test_matches_loop(dtype, length):
    rng = np.random.default_rng(length)
    shape = (2, length, 3, 4)

    def draw(scale=1.0):
        x = rng.uniform(-scale, scale, shape)
        return x + 1j * rng.uniform(-scale, scale, shape) if np.issubdtype(dtype, np.complexfloating) else x

    decay, drive, initial_state = draw(0.9), draw(), draw()[:, 0]
    h, expected = initial_state, []
    for t in range(length):
        h = decay[:, t] * h + drive[:, t]
        expected.append(h)
    actual = linear_recurrence(*(jnp.asarray(x, dtype) for x in (decay, drive, initial_state)))
    assert actual.dtype == dtype
    assert relative_error(as_real(actual), as_real(np.stack(expected, 1))) < 1e-5


def test_reset_restarts_the_recurrence():
    rng = np.random.default_rng(3)
    decay, drive = rng.uniform(-0.9, 0.9, (2, 2, 9, 3)).astype(np.float32)
    initial_state = rng.standard_normal((2, 3)).astype(np.float32)
    reset = rng.random((2, 9)) < 0.4
    reset[0, 0] = True  # at t = 0 the initial state is dropped
    h, expected = initial_state, []
    for t in range(9):
        h = np.where(reset[:, t, None], 0.0, decay[:, t] * h) + drive[:, t]
        expected.append(h)
    actual = linear_recurrence(*(jnp.asarray(x) for x in (decay, drive, initial_state)),
                               reset=jnp.asarray(reset))
    assert relative_error(actual, np.stack(expected, 1)) < 1e-6
    with pytest.raises(ValueError, match=r"reset has shape \(2, 8\), expected \(2, 9\)"):
        linear_recurrence(jnp.asarray(decay), jnp.asarray(drive), reset=jnp.asarray(reset[:, 1:]))


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"decay has shape \(1, 3\) but drive has shape \(1, 4\)"):
        linear_recurrence(jnp.ones((1, 3)), jnp.ones((1, 4)))
    with pytest.raises(ValueError, match=r"initial_state has shape \(2,\), expected \(1,\)"):
        linear_recurrence(jnp.ones((1, 3)), jnp.ones((1, 3)), jnp.ones(2))
