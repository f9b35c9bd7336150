"""LTI ops (HiPPO, S4's Cauchy kernel, S4D's Vandermonde kernel, S5's scan, FFT convolution,
liquid input products) against float64 NumPy references written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST_COMPILE, TOLERANCE, real_view, relative_error
from ssmjax.ops import hippo, lti

# One XLA program per op beats op-by-op dispatch on a busy CPU (FAST_COMPILE: see conftest).


def compiled(fn, static_argnums=()):
    return jax.jit(fn, static_argnums=static_argnums, compiler_options=FAST_COMPILE)


dplr_kernel = compiled(lti.dplr_kernel, 6)
dplr_recurrence = compiled(lti.dplr_recurrence, 6)
vandermonde_kernel = compiled(lti.vandermonde_kernel, 3)
diagonal_state_response = compiled(lti.diagonal_state_response, 3)
dense_state_response = compiled(lti.dense_state_response, 3)
fft_conv = compiled(lti.fft_conv)
s5_scan = compiled(lti.s5_scan)

# Float32 FFTs and Cauchy sums (with the Woodbury solve) round to ~1e-7 relative on these
# shapes and ~2e-6 on the HiPPO kernel at L = 2048: the float32 bound holds for all of them.
F32 = TOLERANCE[jnp.float32]


def as_real(x):
    x = np.asarray(x)
    return np.stack([x.real, x.imag]) if np.iscomplexobj(x) else x


def complex_normal(rng, *shape):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)


def full(x):
    """Kept half of each conjugate pair → full basis, along the last axis."""
    return np.concatenate([x, np.conj(x)], axis=-1)


def random_dplr(rng, channels=3, half=4, rank=1):
    Lambda = -rng.uniform(0.2, 1.0, (channels, half)) + 1j * rng.uniform(-4, 4, (channels, half))
    P = 0.5 * complex_normal(rng, channels, rank, half)
    Q = P + 0.1 * complex_normal(rng, channels, rank, half)
    delta = rng.uniform(0.05, 0.5, channels)
    return Lambda, P, Q, delta


def dense_bilinear(Lambda, P, Q, delta):
    """Per channel: A = Λ − P Q* in the full basis, then Ā, and the map B ↦ B̄, by dense solves."""
    A_bar, B_map = [], []
    for lam, p, q, dt in zip(Lambda, P, Q, delta):
        A = np.diag(full(lam)) - full(p).T @ full(q).conj()
        eye = np.eye(A.shape[0])
        A_bar.append(np.linalg.solve(eye - dt / 2 * A, eye + dt / 2 * A))
        B_map.append(np.linalg.solve(eye - dt / 2 * A, dt * eye))
    return np.stack(A_bar), np.stack(B_map)


# ------------------------------------------------------------------------------- HiPPO


@pytest.mark.parametrize("size", [1, 5, 16])
def test_hippo_legs_closed_form(size):
    A, B = hippo.hippo_legs(size)
    for n in range(size):
        assert B[n] == pytest.approx(np.sqrt(2 * n + 1))
        for k in range(size):
            expected = (-np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1) if n > k
                        else -(n + 1.0) if n == k else 0.0)
            assert A[n, k] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("size", [2, 8, 64])
def test_hippo_legs_nplr_reconstructs(size):
    A, B = hippo.hippo_legs(size)
    Lambda, P, B_tilde, V = hippo.hippo_legs_nplr(size)
    np.testing.assert_allclose(V.conj().T @ V, np.eye(size), atol=1e-12)
    reconstructed = V @ (np.diag(Lambda) - np.outer(P, P.conj())) @ V.conj().T
    assert relative_error(as_real(reconstructed), as_real(A.astype(complex))) < 1e-13
    assert relative_error(as_real(V @ B_tilde), as_real(B.astype(complex))) < 1e-13
    np.testing.assert_allclose(Lambda.real, -0.5, atol=1e-12)
    half = size // 2
    assert np.all(Lambda[:half].imag > 0)
    for x in (Lambda, P, B_tilde):
        np.testing.assert_array_equal(x[half:], x[:half].conj())
    # A + P Pᵀ (P = sqrt(n + ½)) is normal, which is what makes the decomposition exist.
    S = A + np.outer(hippo.hippo_legs_low_rank(size), hippo.hippo_legs_low_rank(size))
    np.testing.assert_allclose(S @ S.T, S.T @ S, atol=1e-9 * size**2)


def test_s4d_and_s5_initial_eigenvalues():
    np.testing.assert_allclose(hippo.s4d_lin_eigenvalues(8), -0.5 + 1j * np.pi * np.arange(4))
    n = np.arange(4)
    np.testing.assert_allclose(hippo.s4d_inv_eigenvalues(8), -0.5 + 1j * 8 / np.pi * (8 / (2 * n + 1) - 1))
    Lambda, V = hippo.hippo_n_blocks(8, blocks=2)
    block = hippo.hippo_legs_nplr(4)
    np.testing.assert_allclose(Lambda, np.tile(block.Lambda[:2], 2))
    # Each block of [V, conj V] diagonalises the normal part of HiPPO-LegS of size P/J.
    A, _ = hippo.hippo_legs(4)
    normal_part = A + np.outer(hippo.hippo_legs_low_rank(4), hippo.hippo_legs_low_rank(4))
    for j in range(2):
        Vj = np.concatenate([V[4 * j:4 * j + 4, 2 * j:2 * j + 2], V[4 * j:4 * j + 4, 2 * j:2 * j + 2].conj()], 1)
        rebuilt = Vj @ np.diag(full(Lambda[2 * j:2 * j + 2])) @ Vj.conj().T
        np.testing.assert_allclose(rebuilt, normal_part, atol=1e-12)
    assert np.count_nonzero(V[:4, 2:]) == 0 and np.count_nonzero(V[4:, :2]) == 0
    with pytest.raises(ValueError, match="blocks is 3"):
        hippo.hippo_n_blocks(8, blocks=3)
    with pytest.raises(ValueError, match="state_size is 7, expected an even number"):
        hippo.hippo_legs_nplr(7)


# ------------------------------------------------------------------ S4 kernel and views


def naive_dplr_kernel(Lambda, P, Q, B, C_tilde, delta, length):
    """C̄ Ā^k B̄ by explicit matrix powers of the dense discretised A = Λ − P Q*, with
    C̄ = C̃ (I − Ā^L)⁻¹; ``B: (m, h, n)``, ``C_tilde: (c, h, n)`` → ``(c, m, h, L)``."""
    A_bar, B_map = dense_bilinear(Lambda, P, Q, delta)
    channels, size = A_bar.shape[0], A_bar.shape[1]
    kernel = np.zeros((C_tilde.shape[0], B.shape[0], channels, length))
    for h in range(channels):
        C_bar = full(C_tilde[:, h]) @ np.linalg.inv(np.eye(size) - np.linalg.matrix_power(A_bar[h], length))
        B_bar = full(B[:, h]) @ B_map[h].T
        power = np.eye(size)
        for k in range(length):
            response = C_bar @ power @ B_bar.T                        # (c, m), real up to rounding
            assert np.abs(response.imag).max() < 1e-8 * max(1.0, np.abs(response).max())
            kernel[:, :, h, k] = response.real
            power = A_bar[h] @ power
    return kernel


@pytest.mark.parametrize("length,rank", [(16, 1), (7, 2)])
def test_cauchy_kernel_equals_materialised_matrix_powers(length, rank):
    rng = np.random.default_rng(length)
    Lambda, P, Q, delta = random_dplr(rng, rank=rank)
    B, C = complex_normal(rng, 2, 3, 4), complex_normal(rng, 2, 3, 4)
    expected = naive_dplr_kernel(Lambda, P, Q, B, C, delta, length)
    with jax.enable_x64(True):
        exact = dplr_kernel(*map(jnp.asarray, (Lambda, P, Q, B, C, delta)), length)
        assert exact.dtype == jnp.float64
        assert relative_error(exact, expected) < 1e-11
    single = dplr_kernel(*(jnp.asarray(x, jnp.complex64) for x in (Lambda, P, Q, B, C)),
                             jnp.asarray(delta, jnp.float32), length)
    assert single.dtype == jnp.float32 and single.shape == (2, 2, 3, length)
    assert relative_error(single, expected) < F32
    one = dplr_kernel(*(jnp.asarray(x, jnp.complex64) for x in (Lambda, P, Q, B[0], C[0])),
                          jnp.asarray(delta, jnp.float32), length)
    assert relative_error(one, single[0, 0]) < F32


def test_hippo_kernel_single_precision_at_long_length():
    """The HiPPO-initialised kernel at L = 2048: float32 against the same math in float64."""
    rng = np.random.default_rng(0)
    nplr = hippo.hippo_legs_nplr(32)
    Lambda, P, B = (np.tile(x[:16], (2, 1)) for x in (nplr.Lambda, nplr.P, nplr.B))
    P = P[:, None]
    C, delta = complex_normal(rng, 2, 16), np.array([1e-3, 1e-1])
    with jax.enable_x64(True):
        expected = np.asarray(dplr_kernel(*map(jnp.asarray, (Lambda, P, P, B, C, delta)), 2048))
    single = dplr_kernel(*(jnp.asarray(x, jnp.complex64) for x in (Lambda, P, P, B, C)),
                             jnp.asarray(delta, jnp.float32), 2048)
    assert relative_error(single, expected) < F32


def test_dplr_recurrence_is_the_discretised_system():
    rng = np.random.default_rng(1)
    Lambda, P, Q, delta = random_dplr(rng)
    B, C = complex_normal(rng, 3, 4), complex_normal(rng, 2, 3, 4)
    A_bar, B_map = dense_bilinear(Lambda, P, Q, delta)
    with jax.enable_x64(True):
        complex_A, complex_B = compiled(lti.dplr_bilinear)(*map(jnp.asarray, (Lambda, P, Q, B, delta)))
        assert relative_error(as_real(complex_A), as_real(A_bar)) < 1e-12
        assert relative_error(as_real(complex_B), as_real(np.einsum("hij,hj->hi", B_map, full(B)))) < 1e-12
        half_B = compiled(lti.dplr_bilinear_input)(*map(jnp.asarray, (Lambda, P, Q, B, delta)))
        assert relative_error(as_real(half_B), as_real(np.asarray(complex_B)[:, :4])) < 1e-12
        back = compiled(lti.dplr_continuous_input)(*map(jnp.asarray, (Lambda, P, Q)), half_B, jnp.asarray(delta))
        assert relative_error(as_real(back), as_real(B)) < 1e-12
        recurrence = dplr_recurrence(*map(jnp.asarray, (Lambda, P, Q, B, C, delta)), 10)
        assert recurrence.A_bar.dtype == jnp.float64 and recurrence.C_bar.shape == (2, 3, 8)
        impulse = np.stack([np.einsum("chi,hij,hj->ch", recurrence.C_bar,
                                      np.linalg.matrix_power(np.asarray(recurrence.A_bar), k),
                                      recurrence.B_bar[0]) for k in range(10)], -1)
        kernel = dplr_kernel(*map(jnp.asarray, (Lambda, P, Q, B, C, delta)), 10)
        assert relative_error(impulse, kernel) < 1e-11
    single = dplr_recurrence(*(jnp.asarray(x, jnp.complex64) for x in (Lambda, P, Q, B, C)),
                                 jnp.asarray(delta, jnp.float32), 10)
    assert single.A_bar.dtype == jnp.float32
    assert relative_error(single.A_bar, recurrence.A_bar) < F32


def test_dense_views_reject_mismatched_shapes():
    A = jnp.zeros((3, 4, 4))
    with pytest.raises(ValueError, match=r"state has shape \(2, 3, 5\), expected \(batch, 3, 4\)"):
        lti.dense_state_response(A, jnp.zeros((3, 4)), jnp.zeros((2, 3, 5)), 4)
    with pytest.raises(ValueError, match=r"inputs has shape \(1, 2, 5, 3\), expected \(2, batch, length, 3\)"):
        lti.dense_final_state(A, jnp.zeros((2, 3, 4)), jnp.zeros((1, 2, 5, 3)))
    with pytest.raises(ValueError, match=r"C has shape \(2, 3\), expected \(3, 4\) or \(c, \*\(3, 4\)\)"):
        lti.vandermonde_kernel(jnp.zeros((3, 4)), jnp.zeros((3, 4)), jnp.zeros((2, 3)), 5)
    with pytest.raises(ValueError, match=r"P has shape \(3, 4\), expected \(3, rank, 4\)"):
        lti.dplr_kernel(jnp.zeros((3, 4)), jnp.zeros((3, 4)), jnp.zeros((3, 4)), jnp.zeros((3, 4)),
                        jnp.zeros((3, 4)), jnp.ones(3), 8)


def test_dense_state_terms_match_a_loop():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(3, 4, 4)) * 0.4
    B, C = rng.normal(size=(2, 3, 4)), rng.normal(size=(3, 4))
    inputs, x0 = rng.normal(size=(2, 2, 9, 3)), rng.normal(size=(2, 3, 4))
    x, response_only, ys = x0.copy(), x0.copy(), []
    for k in range(9):
        x = np.einsum("hij,bhj->bhi", A, x) + np.einsum("mhi,mbh->bhi", B, inputs[:, :, k])
        response_only = np.einsum("hij,bhj->bhi", A, response_only)
        ys.append(np.einsum("hi,bhi->bh", C, response_only))
    with jax.enable_x64(True):
        final = compiled(lti.dense_final_state)(*map(jnp.asarray, (A, B, inputs, x0)))
        response = dense_state_response(*map(jnp.asarray, (A, C, x0)), 9)
        step_y, step_x = compiled(lti.dense_step)(lti.DenseRecurrence(*map(jnp.asarray, (A, B, C[None]))),
                                        jnp.asarray(x0), jnp.asarray(inputs[:, :, 0]))
    assert relative_error(final, x) < 1e-12
    assert relative_error(response, np.stack(ys, 1)) < 1e-12
    first = np.einsum("hij,bhj->bhi", A, x0) + np.einsum("mhi,mbh->bhi", B, inputs[:, :, 0])
    assert relative_error(step_x, first) < 1e-12
    assert relative_error(step_y, np.einsum("hi,bhi->bh", C, first)) < 1e-12


# --------------------------------------------------------------------- diagonal (S4D)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_vandermonde_kernel_and_diagonal_views_match_a_loop(method):
    rng = np.random.default_rng(3)
    Lambda = -rng.uniform(0.1, 1.0, (3, 4)) + 1j * rng.uniform(-5, 5, (3, 4))
    B, C = complex_normal(rng, 3, 4), complex_normal(rng, 2, 3, 4)
    delta = rng.uniform(0.01, 0.5, 3)[:, None]
    if method == "zoh":
        Lambda_bar = np.exp(delta * Lambda)
        B_bar = (Lambda_bar - 1) / Lambda * B
    else:
        Lambda_bar = (1 + delta * Lambda / 2) / (1 - delta * Lambda / 2)
        B_bar = delta / (1 - delta * Lambda / 2) * B
    u, x0 = rng.normal(size=(2, 11, 3)), complex_normal(rng, 2, 3, 4)
    x, ys = x0.copy(), []
    for k in range(11):
        x = Lambda_bar * x + B_bar * u[:, k, :, None]
        ys.append(2 * np.einsum("chn,bhn->bch", C, x).real)
    impulse = np.stack([2 * np.einsum("chn,hn->ch", C, B_bar * Lambda_bar**k).real for k in range(11)], -1)

    discrete = lti.discretize_diagonal(jnp.asarray(Lambda, jnp.complex64), jnp.asarray(B, jnp.complex64),
                                       jnp.asarray(delta, jnp.float32), method)
    assert relative_error(as_real(discrete.Lambda_bar), as_real(Lambda_bar)) < F32
    assert relative_error(as_real(discrete.B_bar), as_real(B_bar)) < F32
    C32 = jnp.asarray(C, jnp.complex64)
    kernel = vandermonde_kernel(discrete.log_Lambda_bar, discrete.B_bar, C32, 11)
    assert relative_error(kernel, impulse) < F32
    conv = fft_conv(jnp.asarray(u, jnp.float32), kernel[0])
    response = diagonal_state_response(discrete.log_Lambda_bar, C32[0], jnp.asarray(x0, jnp.complex64), 11)
    assert relative_error(conv + response, np.stack(ys, 1)[:, :, 0]) < F32
    final = compiled(lti.diagonal_final_state)(discrete.log_Lambda_bar, discrete.B_bar, jnp.asarray(u, jnp.float32),
                                     jnp.asarray(x0, jnp.complex64))
    assert relative_error(as_real(final), as_real(x)) < F32
    y0, x1 = lti.diagonal_step(discrete.Lambda_bar, discrete.B_bar, C32[0], jnp.asarray(x0, jnp.complex64),
                               jnp.asarray(u[:, 0], jnp.float32))
    expected_x1 = Lambda_bar * x0 + B_bar * u[:, 0, :, None]
    assert relative_error(as_real(x1), as_real(expected_x1)) < F32


def test_fft_conv_two_sided_and_summed_match_direct_sums():
    rng = np.random.default_rng(4)
    u, forward, backward = rng.normal(size=(2, 3, 9, 2)), rng.normal(size=(2, 2, 12)), rng.normal(size=(2, 2, 9))
    expected = np.zeros((3, 9, 2))
    for m in range(2):
        for t in range(9):
            for s in range(9):
                if s <= t:
                    expected[:, t] += forward[m, :, t - s] * u[m, :, s]
                else:
                    expected[:, t] += backward[m, :, s - t - 1] * u[m, :, s]
    actual = fft_conv(*(jnp.asarray(x, jnp.float32) for x in (u, forward, backward)))
    assert actual.shape == (3, 9, 2)
    assert relative_error(actual, expected) < F32
    with pytest.raises(ValueError, match=r"causal_kernel has shape \(2, 5\), expected \(2, ≥9\)"):
        lti.fft_conv(jnp.ones((3, 9, 2)), jnp.ones((2, 5)))


# --------------------------------------------------------------------------------- S5


def test_s5_scan_equals_sequential_loop():
    rng = np.random.default_rng(5)
    Lambda_bar = np.exp(-rng.uniform(0.01, 0.3, 4) + 1j * rng.uniform(-1, 1, 4))
    B_bar, C = complex_normal(rng, 3, 4), complex_normal(rng, 3, 4)
    u, x0 = rng.normal(size=(2, 13, 3)), complex_normal(rng, 2, 4)
    x, ys = x0.copy(), []
    for k in range(13):
        x = Lambda_bar * x + u[:, k] @ B_bar
        ys.append(2 * (x @ C.T).real)
    args = [jnp.asarray(v, jnp.complex64) for v in (Lambda_bar, B_bar, C)]
    y, final = s5_scan(*args, jnp.asarray(u, jnp.float32), jnp.asarray(x0, jnp.complex64))
    assert relative_error(y, np.stack(ys, 1)) < F32
    assert relative_error(as_real(final), as_real(x)) < F32
    y0, x1 = lti.s5_step(*args, jnp.asarray(x0, jnp.complex64), jnp.asarray(u[:, 0], jnp.float32))
    assert relative_error(y0, ys[0]) < F32
    with pytest.raises(ValueError, match=r"B_bar has shape \(4, 3\), expected \(3, 4\)"):
        lti.s5_scan(args[0], args[1].T, args[2], jnp.ones((2, 13, 3)))


# --------------------------------------------------------------------------- Liquid-S4


def test_input_products_with_history():
    rng = np.random.default_rng(6)
    u, history = (rng.normal(size=shape).astype(np.float32) for shape in ((2, 5, 3), (2, 2, 3)))
    padded = np.concatenate([history, u], 1)
    expected = np.stack([np.stack([np.prod(padded[:, t + 2 - q + 1:t + 3], axis=1) for t in range(5)], 1)
                         for q in (1, 2, 3)])
    actual = lti.input_products(jnp.asarray(u), 3, jnp.asarray(history))
    assert relative_error(actual, expected) < 1e-6
    zero_start = lti.input_products(jnp.asarray(u), 3)
    np.testing.assert_array_equal(zero_start[2, :, :2], 0.0)
    np.testing.assert_array_equal(lti.next_history(jnp.asarray(u), 2, jnp.asarray(history)), u[:, 3:])
    np.testing.assert_array_equal(lti.next_history(jnp.asarray(u[:, :1]), 2, jnp.asarray(history)),
                                  padded[:, 1:3])
    with pytest.raises(ValueError, match=r"history has shape \(2, 1, 3\), expected \(2, 2, 3\)"):
        lti.input_products(jnp.asarray(u), 3, jnp.asarray(history[:, :1]))


@pytest.mark.parametrize("rank", [1, 2])
def test_liquid_input_vectors_discretise_to_powers_of_B_bar(rank):
    rng = np.random.default_rng(7)
    Lambda, P, Q, delta = random_dplr(rng, rank=rank)
    B = complex_normal(rng, 3, 4)
    _, B_map = dense_bilinear(Lambda, P, Q, delta)
    B_bar = np.einsum("hij,hj->hi", B_map, full(B))                   # full basis
    with jax.enable_x64(True):
        vectors = compiled(lti.liquid_input_vectors, 5)(
            *map(jnp.asarray, (Lambda, P, Q, B, delta)), 3)
        assert vectors.shape == (3, 3, 4)
        for q in range(3):
            discretised = np.einsum("hij,hj->hi", B_map, full(np.asarray(vectors[q])))
            assert relative_error(as_real(discretised), as_real(B_bar ** (q + 1))) < 1e-12


# ------------------------------------------------- states after each row's valid prefix


LENGTHS = np.array([6, 3, 0, 1])


def prefix_loop(step, state, inputs, lengths):
    """``state`` advanced by ``step(state, input_k)`` over each row's first ``lengths[i]``
    inputs: a float64 loop over rows and time; ``inputs: (b, L, ...)`` time-major per row."""
    finals = []
    for row, length in enumerate(lengths):
        x = state[row]
        for k in range(length):
            x = step(x, inputs[row, k])
        finals.append(x)
    return np.stack(finals)


def test_right_align_moves_each_valid_prefix_to_the_end():
    x = np.arange(1, 2 * 4 * 1 + 1, dtype=np.float32).reshape(2, 4, 1)
    aligned = lti.right_align(jnp.asarray(x), jnp.asarray([3, 1]))[..., 0]
    np.testing.assert_array_equal(aligned, [[0, 1, 2, 3], [0, 0, 0, 5]])


def test_final_states_stop_at_each_rows_length():
    """diagonal_final_state, dense_final_state (and dense_power_apply), s5_scan and
    next_history with ``lengths`` against float64 loops that stop there."""
    rng = np.random.default_rng(8)
    batch, length, channels, n = len(LENGTHS), 6, 3, 4
    lengths = jnp.asarray(LENGTHS, jnp.int32)
    u = rng.normal(size=(batch, length, channels))
    with jax.enable_x64(True):
        log_Lambda_bar = -rng.uniform(0.05, 0.5, (channels, n)) + 1j * rng.uniform(-2, 2, (channels, n))
        B_bar, x0 = complex_normal(rng, channels, n), complex_normal(rng, batch, channels, n)
        diagonal = compiled(lti.diagonal_final_state)(*map(jnp.asarray, (log_Lambda_bar, B_bar, u, x0)),
                                                      lengths=lengths)
        expected = prefix_loop(lambda x, u_k: np.exp(log_Lambda_bar) * x + B_bar * u_k[:, None], x0, u, LENGTHS)
        assert relative_error(real_view(diagonal), real_view(expected)) < 1e-12

        A = rng.normal(size=(channels, n, n)) * 0.4
        B, inputs = rng.normal(size=(2, channels, n)), rng.normal(size=(2, batch, length, channels))
        y0 = rng.normal(size=(batch, channels, n))
        dense = compiled(lti.dense_final_state)(*map(jnp.asarray, (A, B, inputs, y0)), lengths=lengths)
        expected = prefix_loop(lambda x, v: np.einsum("hij,hj->hi", A, x) + np.einsum("mhi,mh->hi", B, v),
                               y0, np.moveaxis(inputs, 0, 2), LENGTHS)
        assert relative_error(dense, expected) < 1e-12
        powered = lti.dense_power_apply(jnp.asarray(A), jnp.asarray(y0), lengths, length)
        expected = [np.einsum("hij,hj->hi", np.linalg.matrix_power(A, k), y0[row]) for row, k in enumerate(LENGTHS)]
        assert relative_error(powered, np.stack(expected)) < 1e-12

        Lambda_bar = np.exp(-rng.uniform(0.05, 0.5, n) + 1j * rng.uniform(-2, 2, n))
        B_T, C = complex_normal(rng, channels, n), complex_normal(rng, channels, n)
        s0 = complex_normal(rng, batch, n)
        y, final = s5_scan(*map(jnp.asarray, (Lambda_bar, B_T, C, u, s0)), lengths=lengths)
        y_full, _ = s5_scan(*map(jnp.asarray, (Lambda_bar, B_T, C, u, s0)))
        expected = prefix_loop(lambda x, u_k: Lambda_bar * x + u_k @ B_T, s0, u, LENGTHS)
        assert relative_error(real_view(final), real_view(expected)) < 1e-12
        np.testing.assert_array_equal(y, y_full)  # the outputs are the scan's whatever the lengths

    history = rng.normal(size=(batch, 2, channels)).astype(np.float32)
    kept = lti.next_history(jnp.asarray(u, jnp.float32), 2, jnp.asarray(history), lengths=lengths)
    joined = np.concatenate([history, u.astype(np.float32)], 1)
    np.testing.assert_array_equal(kept, np.stack([joined[row, k:k + 2] for row, k in enumerate(LENGTHS)]))
    with pytest.raises(ValueError, match=r"lengths has shape \(3,\), expected \(4,\)"):
        lti.diagonal_final_state(jnp.asarray(log_Lambda_bar), jnp.asarray(B_bar), jnp.asarray(u),
                                 lengths=lengths[:3])
