"""S5 (Smith, Warrington, Linderman 2023, "Simplified State Space Layers for Sequence
Modeling").

One MIMO SSM over all d_model channels (H = d_model) with P latent states, diagonalised,
keeping one state of each conjugate pair (P/2 complex)::

    Λ = −exp(log_neg_lambda_real) + i·lambda_imag    HiPPO-N eigenvalues (J blocks) at init
    Δ = exp(log_step)                                one step per state, log-uniform at init
    Λ̄, B̄ = ZOH(Λ, B̃, Δ)  (or bilinear)               Λ̄ = exp(ΔΛ), B̄ = (Λ̄ − 1)/Λ · B̃
    x_k = Λ̄ ⊙ x_{k−1} + B̄ u_k                        parallel scan (ssmjax.ops.linear_recurrence)
    y_k = 2 Re(C̃ x_k) + D ⊙ u_k
    out = head(y)                                     GELU, then S5's gated head
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssmjax.nn.initializers import Initializer, LecunNormal, param
from ssmjax.nn.lti import (Activation, LTICache, LTILayer, OutputMode, as_complex, as_real_pair,
                           check_layer_options, log_uniform_steps, real_pair_values)
from ssmjax.ops.hippo import hippo_n_blocks
from ssmjax.ops.lti import (DiagonalDiscretization, Discretization, discretize_diagonal, s5_scan,
                            s5_step)


@dataclasses.dataclass(frozen=True)
class S5InputMatrix(Initializer):
    """S5's ``B̃ᵀ = (V⁻¹ B)ᵀ`` as real pairs ``(H, P/2, 2)``: B LeCun normal, V the eigenvectors
    of HiPPO-N in ``blocks`` blocks (kept half of each conjugate pair)."""

    blocks: int

    def _eigenvectors(self, shape) -> tuple[int, np.ndarray]:
        d_state = 2 * shape[1]
        return d_state, hippo_n_blocks(d_state, self.blocks)[1]                      # (P, P/2)

    def __call__(self, key, shape, dtype=jnp.float32):
        d_state, V = self._eigenvectors(shape)
        B = np.asarray(LecunNormal()(key, (shape[0], d_state), jnp.float32), np.float64)  # Bᵀ
        return as_real_pair(B @ V.conj(), dtype)

    def sample(self, rng, shape):
        d_state, V = self._eigenvectors(shape)
        return real_pair_values(LecunNormal().sample(rng, (shape[0], d_state)) @ V.conj())


@dataclasses.dataclass(frozen=True)
class S5OutputMatrix(Initializer):
    """S5's ``C̃ = C V`` per direction as real pairs ``(c, H, P/2, 2)``: C complex with real and
    imaginary parts N(0, 1/P) (LeCun normal with fan-in P), V as :class:`S5InputMatrix`."""

    blocks: int

    def _transform(self, C: np.ndarray) -> np.ndarray:
        d_state = C.shape[-2]
        V = hippo_n_blocks(d_state, self.blocks)[1]
        C = C / np.sqrt(d_state)
        return (C[..., 0] + 1j * C[..., 1]) @ V                                      # (c, H, P/2)

    def __call__(self, key, shape, dtype=jnp.float32):
        full = (shape[0], shape[1], 2 * shape[2], 2)
        return as_real_pair(self._transform(np.asarray(jax.random.normal(key, full), np.float64)), dtype)

    def sample(self, rng, shape):
        return real_pair_values(self._transform(rng.normal(0.0, 1.0, (shape[0], shape[1], 2 * shape[2], 2))))


class S5(LTILayer):
    """S5 layer: ``(b, L, d_model) → (b, L, d_model)``, any L.

    Args:
        d_model: H, input and output channels of the one MIMO SSM.
        d_state: P, latent size (P/2 complex states stored); P/J must be even.
        blocks: J, HiPPO-N blocks on the diagonal at initialisation.
        discretization: ``"zoh"`` (the paper's default) or ``"bilinear"``.
        bidirectional: a second scan over the reversed sequence with its own C̃ (S5's
            bidirectional option; both directions see u_k); no recurrent form then.
        dt_min, dt_max: range of the log-uniform initial Δ (0.001, 0.1).
        activation, output: the head (``"gelu"``, ``"half_glu"`` as S5's ``half_glu1``).
        dtype: compute dtype of the head (``None``: the input's); the SSM runs in float32.

    Parameters: ``log_neg_lambda_real, lambda_imag (P/2,)`` (S5 stores Re Λ unconstrained;
    here Re Λ = −exp(·) keeps it negative), ``B (H, P/2, 2)`` (B̃ᵀ = (V⁻¹ B)ᵀ, B LeCun
    normal), ``C (c, H, P/2, 2)`` (C̃ = C V, C complex LeCun normal), ``log_step (P/2,)``,
    ``D (H,)`` (standard normal), and the head.
    """

    def __init__(self, d_model: int, *, d_state: int = 64, blocks: int = 1,
                 discretization: Discretization = "zoh", bidirectional: bool = False,
                 dt_min: float = 0.001, dt_max: float = 0.1, activation: Activation = "gelu",
                 output: OutputMode = "half_glu", dtype: jnp.dtype | None = None,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        check_layer_options(d_state, activation, output, discretization)
        half = d_state // 2
        self._init_spectrum(d_model, d_state, bidirectional, dtype, "hippo_n", (half,), param_dtype,
                            "state", blocks=blocks)
        self.discretization = discretization
        options = dict(param_dtype=param_dtype, rngs=rngs)
        self.B = param(S5InputMatrix(blocks), (d_model, half, 2), "embed", "state", None,
                       group="ssm", **options)
        directions = 2 if bidirectional else 1
        self.C = param(S5OutputMatrix(blocks), (directions, d_model, half, 2), None, "embed", "state",
                       None, group="decay", **options)
        self.log_step = param(log_uniform_steps(dt_min, dt_max), (half,), "state", group="ssm",
                              **options)
        self._init_skip_and_head(activation=activation, output=output, torch_init=False,
                                 param_dtype=param_dtype, rngs=rngs)

    def discretized(self) -> tuple[DiagonalDiscretization, jax.Array]:
        """``(log Λ̄ (P/2,), B̄ᵀ (H, P/2))`` complex64 and ``C̃: (c, H, P/2)``."""
        delta = jnp.exp(self.log_step[...].astype(jnp.float32))
        return (discretize_diagonal(self.spectrum(), as_complex(self.B[...]), delta,
                                    self.discretization),
                as_complex(self.C[...]))

    def _ssm(self, u, cache, lengths, return_cache):
        discrete, C = self.discretized()
        Lambda_bar = discrete.Lambda_bar
        y, state = s5_scan(Lambda_bar, discrete.B_bar, C[0], u,
                           None if cache is None else cache.state, lengths=lengths)
        if self.bidirectional:
            y = y + s5_scan(Lambda_bar, discrete.B_bar, C[1], u[:, ::-1])[0][:, ::-1]
        return y, LTICache(state) if return_cache else None

    def _zero_cache(self, batch_size: int) -> LTICache:
        """Zero state ``(b, P/2)`` complex64."""
        return LTICache(jnp.zeros((batch_size, self.d_state // 2), jnp.complex64))

    def _ssm_step(self, u_t, cache):
        discrete, C = self.discretized()
        y, state = s5_step(discrete.Lambda_bar, discrete.B_bar, C[0], cache.state, u_t)
        return y, LTICache(state)
