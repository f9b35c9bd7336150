"""S4D (Gu, Gupta, Goel, Ré 2022, "On the Parameterization and Initialization of Diagonal
State Space Models").

Per channel h of the d_model channels (H = d_model), a diagonal SISO SSM of N/2 complex
states (one of each conjugate pair)::

    Λ = −exp(log_neg_lambda_real) + i·lambda_imag    S4D-Lin or S4D-Inv at initialisation
    Λ̄, B̄ = ZOH(Λ, B, Δ)  (or bilinear)               Λ̄ = exp(ΔΛ), B̄ = (Λ̄ − 1)/Λ · B
    K̄_ℓ = 2 Re Σ_n C_n B̄_n Λ̄_n^ℓ                    Vandermonde kernel
    y = K̄ ∗ u + D u                                  FFT convolution
    out = head(y)                                     GELU, then GLU projection
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from ssmjax.nn.initializers import ComplexConstant, param
from ssmjax.nn.lti import (Activation, LTICache, LTILayer, OutputMode, as_complex,
                           check_layer_options)
from ssmjax.ops.lti import (DiagonalDiscretization, Discretization,
                            diagonal_final_state, diagonal_state_response, diagonal_step,
                            discretize_diagonal, fft_conv, vandermonde_kernel)

S4DInit = Literal["lin", "inv"]
S4D_INITS = ("lin", "inv")


class S4D(LTILayer):
    """S4D layer: ``(b, L, d_model) → (b, L, d_model)``, any L.

    Args:
        d_model: H, channels (one SSM each).
        d_state: N (64 in S4D); N/2 complex states are stored.
        init: ``"lin"`` (S4D-Lin, λ_n = −½ + iπn, the paper's default) or ``"inv"`` (S4D-Inv).
        discretization: ``"zoh"`` (the paper's default) or ``"bilinear"``.
        bidirectional: a second C run backwards in time (two-sided kernel); no recurrent form.
        dt_min, dt_max: range of the log-uniform initial Δ (0.001, 0.1).
        activation, output: the head (``"gelu"``, ``"glu"``).
        dtype: compute dtype of the head (``None``: the input's); the SSM runs in float32.

    Parameters: ``log_neg_lambda_real, lambda_imag (H, N/2)``, ``B (H, N/2, 2)`` (ones),
    ``C (c, H, N/2, 2)`` (complex normal, E|C|² = 1), ``log_dt (H,)``, ``D (H,)``, the head.
    """

    def __init__(self, d_model: int, *, d_state: int = 64, init: S4DInit = "lin",
                 discretization: Discretization = "zoh", bidirectional: bool = False,
                 dt_min: float = 0.001, dt_max: float = 0.1, activation: Activation = "gelu",
                 output: OutputMode = "glu", dtype: jnp.dtype | None = None,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        check_layer_options(d_state, activation, output, discretization)
        if init not in S4D_INITS:
            raise ValueError(f"init is {init!r}, expected one of {S4D_INITS}")
        half = d_state // 2
        self._init_spectrum(d_model, d_state, bidirectional, dtype, f"s4d_{init}", (d_model, half),
                            param_dtype, "embed", "state")
        self.discretization = discretization
        self.B = param(ComplexConstant(1.0), (d_model, half, 2), "embed", "state", None, group="ssm",
                       param_dtype=param_dtype)
        self._init_channel_readout_and_steps(dt_min, dt_max, param_dtype, rngs)
        self._init_skip_and_head(activation=activation, output=output, torch_init=True,
                                 param_dtype=param_dtype, rngs=rngs)

    def discretized(self) -> tuple[DiagonalDiscretization, jax.Array]:
        """``(log Λ̄, B̄)`` both ``(H, N/2)`` complex64, and ``C: (c, H, N/2)``."""
        delta = jnp.exp(self.log_dt[...].astype(jnp.float32))[:, None]
        return (discretize_diagonal(self.spectrum(), as_complex(self.B[...]), delta,
                                    self.discretization),
                as_complex(self.C[...]))

    def kernel(self, length: int) -> jax.Array:
        """``K̄: (c, H, length)``."""
        discrete, C = self.discretized()
        return vandermonde_kernel(discrete.log_Lambda_bar, discrete.B_bar, C, length)

    def _ssm(self, u, cache, lengths, return_cache):
        length = u.shape[1]
        discrete, C = self.discretized()
        kernel = vandermonde_kernel(discrete.log_Lambda_bar, discrete.B_bar, C, length)
        y = fft_conv(u, kernel[0], kernel[1] if self.bidirectional else None)
        if cache is not None:
            y = y + diagonal_state_response(discrete.log_Lambda_bar, C[0], cache.state, length)
        if not return_cache:
            return y, None
        state = diagonal_final_state(discrete.log_Lambda_bar, discrete.B_bar, u,
                                     None if cache is None else cache.state, lengths=lengths)
        return y, LTICache(state)

    def _zero_cache(self, batch_size: int) -> LTICache:
        """Zero state ``(b, H, N/2)`` complex64."""
        return LTICache(jnp.zeros((batch_size, self.d_model, self.d_state // 2), jnp.complex64))

    def _ssm_step(self, u_t, cache):
        discrete, C = self.discretized()
        y, state = diagonal_step(discrete.Lambda_bar, discrete.B_bar, C[0], cache.state, u_t)
        return y, LTICache(state)
