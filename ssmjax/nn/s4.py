"""S4 (Gu, Goel, Ré 2022, "Efficiently Modeling Long Sequences with Structured State Spaces")
and Liquid-S4 (Hasani et al. 2022, "Liquid Structural State-Space Models").

S4, per channel h of the d_model channels (H = d_model), a SISO SSM of state size N::

    A = Λ − P Q*   (Q = P)     HiPPO-LegS in its NPLR eigenbasis at initialisation
    Δ = exp(log Δ)             log Δ ~ U[log dt_min, log dt_max]
    K̄ = dplr_kernel(Λ, P, B, C̃, Δ, l_max)[:L]       Cauchy + Woodbury at roots of unity
    y = K̄ ∗ u + D u                                 FFT convolution
    out = head(y)                                    GELU, then GLU projection (module lti)

Liquid-S4 linearises a liquid time-constant network, ``x' = (A + B u(t)) x + B u(t)``, whose
bilinear discretisation is ``x_k = (Ā + B̄ u_k) x_{k−1} + B̄ u_k``. Unrolled, its output is
``K̄ ∗ u`` plus terms in products of inputs. Keeping, up to order p, the terms in which the
input-dependent transitions ``B̄ u`` directly follow the injection ``B̄ u_j`` (``B̄ u``
acting on the state elementwise in the eigenbasis, so ``B̄ ⋯ B̄ = B̄^q`` elementwise)::

    U^{(q)}_k = u_k u_{k−1} ⋯ u_{k−q+1}
    "kb":  y = K̄ ∗ u + Σ_{q=2..p} K̄^{(q)} ∗ U^{(q)},      K̄^{(q)}_ℓ = C̄ Ā^ℓ B̄^q
    "pb":  y = K̄ ∗ u + Σ_{q=2..p} (C̄ B̄^q) U^{(q)}        (Ā powers dropped: ℓ = 0 only)

Both are linear recurrences driven by the input products, so Liquid-S4 keeps a step form:
``x_k = Ā x_{k−1} + Σ_q B̄^q U^{(q)}_k`` ("kb") or ``x_k = Ā x_{k−1} + B̄ u_k`` with the
output adding ``Σ_q (C̄ B̄^q) U^{(q)}_k`` ("pb"); the cache holds the state and the last
p − 1 inputs. The full liquid recurrence, whose expansion has a term for every subset of
past inputs, is not what these layers compute.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssmjax.nn.initializers import Deterministic, param
from ssmjax.nn.lti import (Activation, LTICache, LTILayer, OutputMode, as_complex, check_layer_options,
                           real_pair_values)
from ssmjax.ops.hippo import hippo_legs_nplr
from ssmjax.ops.lti import (DenseRecurrence, dense_final_state, dense_state_response, dense_step,
                            dplr_kernel, dplr_recurrence, fft_conv, input_products,
                            liquid_input_vectors, next_history)

LiquidKernel = Literal["kb", "pb"]
LIQUID_KERNELS = ("kb", "pb")


@dataclasses.dataclass(frozen=True)
class HiPPOLegSVector(Deterministic):
    """S4's ``P`` (``(H, 1, N/2, 2)``) or ``B`` (``(H, N/2, 2)``) at initialisation: HiPPO-LegS's
    low-rank factor or input vector in its NPLR eigenbasis, one state of each conjugate pair,
    the same in every channel, as real pairs."""

    vector: Literal["P", "B"]

    def values(self, shape):
        half = shape[-2]
        nplr = hippo_legs_nplr(2 * half)
        vector = nplr.P if self.vector == "P" else nplr.B
        return real_pair_values(np.broadcast_to(vector[:half], shape[:-1]))


class _DPLRLayer(LTILayer):
    """S4 with optional liquid terms; :class:`S4` is order 1, :class:`LiquidS4` order ≥ 2."""

    def __init__(self, d_model: int, *, l_max: int, d_state: int, bidirectional: bool,
                 dt_min: float, dt_max: float, activation: Activation, output: OutputMode,
                 liquid_order: int, liquid_kernel: LiquidKernel, dtype: jnp.dtype | None,
                 param_dtype: jnp.dtype, rngs: nnx.Rngs):
        check_layer_options(d_state, activation, output)
        if not isinstance(l_max, int) or l_max < 1:
            raise ValueError(f"l_max is {l_max!r}, expected a positive integer (the longest input)")
        if liquid_kernel not in LIQUID_KERNELS:
            raise ValueError(f"liquid_kernel is {liquid_kernel!r}, expected one of {LIQUID_KERNELS}")
        half = d_state // 2
        self._init_spectrum(d_model, d_state, bidirectional, dtype, "legs", (d_model, half),
                            param_dtype, "embed", "state")
        self.l_max = l_max
        self.liquid_order = liquid_order
        self.liquid_kernel = liquid_kernel
        self.P = param(HiPPOLegSVector("P"), (d_model, 1, half, 2), "embed", None, "state", None,
                       group="ssm", param_dtype=param_dtype)
        self.B = param(HiPPOLegSVector("B"), (d_model, half, 2), "embed", "state", None, group="ssm",
                       param_dtype=param_dtype)
        self._init_channel_readout_and_steps(dt_min, dt_max, param_dtype, rngs)
        self._init_skip_and_head(activation=activation, output=output, torch_init=True,
                                 param_dtype=param_dtype, rngs=rngs)

    # ---------------------------------------------------------------- SSM parameters

    def ssm_parameters(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """``(Λ (H, n), P (H, 1, n), B (H, n), C̃ (c, H, n), Δ (H,))``, complex64 / float32."""
        return (self.spectrum(), as_complex(self.P[...]), as_complex(self.B[...]), as_complex(self.C[...]),
                jnp.exp(self.log_dt[...].astype(jnp.float32)))

    def _input_vectors(self, Lambda, P, B, delta) -> jax.Array:
        """``(p, H, n)``: B and the continuous forms of the liquid inputs B̄^q."""
        return liquid_input_vectors(Lambda, P, P, B, delta, self.liquid_order)

    def kernel(self) -> jax.Array:
        """``K̄: (c, p, H, l_max)``: direction c, liquid order q = 1 … p (q = 1 is S4's kernel).

        The "pb" kernel uses only the ℓ = 0 taps ``C̄ B̄^q`` of the liquid kernels, yet they
        come from the same Cauchy sums: C̄ exists here only through C̃ and l_max, and
        recovering it directly would cost a dense N × N solve per channel.
        """
        Lambda, P, B, C, delta = self.ssm_parameters()
        return dplr_kernel(Lambda, P, P, self._input_vectors(Lambda, P, B, delta), C, delta, self.l_max)

    def recurrence(self) -> DenseRecurrence:
        """The discretised real-basis matrices for :meth:`step` (forward direction).

        ``A_bar: (H, N, N)``, ``B_bar: (p, H, N)`` (B̄ and the liquid B̄^q), ``C_bar: (1, H, N)``.
        Computing them costs O(N³ log l_max) per channel: when stepping through a sequence,
        compute them once and pass them to every :meth:`step`.
        """
        Lambda, P, B, C, delta = self.ssm_parameters()
        return dplr_recurrence(Lambda, P, P, self._input_vectors(Lambda, P, B, delta), C[:1],
                               delta, self.l_max)

    # ---------------------------------------------------------------- sequence view

    def _liquid_products(self, u: jax.Array, history: jax.Array | None,
                         backward: bool = False) -> jax.Array:
        """``(p, b, L, H)`` input products, looking back (forward SSM) or ahead (backward SSM)."""
        if backward:
            return input_products(u[:, ::-1], self.liquid_order)[:, :, ::-1]
        return input_products(u, self.liquid_order, history)

    def _convolve(self, u: jax.Array, kernel: jax.Array, history: jax.Array | None) -> jax.Array:
        """``y = K̄ ∗ u`` plus the liquid terms, both directions; ``kernel: (c, p, H, ≥L)``."""
        length = u.shape[1]
        kernel = kernel[..., :length]
        if self.liquid_order == 1:
            return fft_conv(u, kernel[0, 0], kernel[1, 0] if self.bidirectional else None)
        products = self._liquid_products(u, history)
        if self.liquid_kernel == "kb":
            y = fft_conv(products, kernel[0])
        else:
            y = fft_conv(u, kernel[0, 0]) + jnp.einsum("qh,qblh->blh", kernel[0, 1:, :, 0], products[1:])
        if self.bidirectional:
            ahead = self._liquid_products(u, None, backward=True)
            if self.liquid_kernel == "kb":
                y = y + fft_conv(ahead, anticausal_kernel=kernel[1])
            else:
                # The backward SSM is shifted by one step: its ℓ = 0 term reads position t + 1.
                shifted = jnp.pad(ahead[1:, :, 1:], ((0, 0), (0, 0), (0, 1), (0, 0)))
                y = (y + fft_conv(u, anticausal_kernel=kernel[1, 0])
                     + jnp.einsum("qh,qblh->blh", kernel[1, 1:, :, 0], shifted))
        return y

    def _ssm(self, u, cache, lengths, return_cache):
        if u.shape[1] > self.l_max:
            raise ValueError(f"hidden has length {u.shape[1]} (shape {tuple(u.shape)}), "
                             f"expected at most l_max = {self.l_max}")
        history = None if cache is None else cache.history
        y = self._convolve(u, self.kernel(), history)
        if cache is None and not return_cache:
            return y, None
        recurrence = self.recurrence()
        if cache is not None:
            y = y + dense_state_response(recurrence.A_bar, recurrence.C_bar[0], cache.state,
                                         u.shape[1])
        if not return_cache:
            return y, None
        products = self._liquid_products(u, history)
        driven = self.liquid_order if self.liquid_kernel == "kb" else 1
        state = dense_final_state(recurrence.A_bar, recurrence.B_bar[:driven], products[:driven],
                                  None if cache is None else cache.state, lengths=lengths)
        return y, LTICache(state, self._next_history(u, history, lengths))

    # ---------------------------------------------------------------- recurrent view

    def _next_history(self, u: jax.Array, history: jax.Array | None,
                      lengths: jax.Array | None = None) -> jax.Array | None:
        if self.liquid_order == 1:
            return None
        return next_history(u, self.liquid_order - 1, history, lengths=lengths)

    def _zero_cache(self, batch_size: int) -> LTICache:
        """Zero state ``(b, H, N)`` float32 and, for Liquid-S4, zero history ``(b, p − 1, H)``."""
        history = (jnp.zeros((batch_size, self.liquid_order - 1, self.d_model), jnp.float32)
                   if self.liquid_order > 1 else None)
        return LTICache(jnp.zeros((batch_size, self.d_model, self.d_state), jnp.float32), history)

    def _ssm_step(self, u_t: jax.Array, cache: LTICache, *,
                  recurrence: DenseRecurrence | None = None) -> tuple[jax.Array, LTICache]:
        """``recurrence``: :meth:`recurrence`, computed once per sequence and passed to every
        :meth:`step` (recomputed if omitted)."""
        recurrence = self.recurrence() if recurrence is None else recurrence
        products = input_products(u_t[:, None], self.liquid_order, cache.history)[:, :, 0]  # (p, b, H)
        if self.liquid_kernel == "kb":
            y, state = dense_step(recurrence, cache.state, products)
        else:
            A_bar, B_bar, C_bar = recurrence
            y, state = dense_step(DenseRecurrence(A_bar, B_bar[:1], C_bar), cache.state, products[:1])
            liquid_weights = jnp.einsum("hn,qhn->qh", C_bar[0], B_bar[1:])            # C̄ B̄^q
            y = y + jnp.einsum("qh,qbh->bh", liquid_weights, products[1:])
        return y, LTICache(state, self._next_history(u_t[:, None], cache.history))


class S4(_DPLRLayer):
    """S4 layer: ``(b, L, d_model) → (b, L, d_model)`` with ``L ≤ l_max``.

    Per channel, a HiPPO-LegS SSM in DPLR form, its kernel by the Cauchy/Woodbury generating
    function at the roots of unity, FFT convolution, ``D`` skip, GELU and the output head.

    Args:
        d_model: H, channels (one SSM each).
        l_max: longest input; S4 learns ``C̃ = C̄ (I − Ā^{l_max})`` (defaults of the paper are
            the task's length, e.g. 1024 for sCIFAR, 16384 for Path-X).
        d_state: N (64 in S4); N/2 complex states are stored.
        bidirectional: add a second C̃ run backwards in time (the kernel becomes two-sided);
            no recurrent form then.
        dt_min, dt_max: range of the log-uniform initial Δ (0.001, 0.1).
        activation, output: the head (``"gelu"``, ``"glu"`` as S4's standalone layer).
        dtype: compute dtype of the head (``None``: the input's); the SSM runs in float32.
        param_dtype: float32.

    Parameters: ``log_neg_lambda_real, lambda_imag (H, N/2)`` (Λ = −exp(·) + i·),
    ``P (H, 1, N/2, 2)``, ``B (H, N/2, 2)``, ``C (c, H, N/2, 2)`` (C̃, complex as real pairs),
    ``log_dt (H,)``, ``D (H,)``, and the head's projections.
    """

    def __init__(self, d_model: int, *, l_max: int, d_state: int = 64, bidirectional: bool = False,
                 dt_min: float = 0.001, dt_max: float = 0.1, activation: Activation = "gelu",
                 output: OutputMode = "glu", dtype: jnp.dtype | None = None,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        super().__init__(d_model, l_max=l_max, d_state=d_state, bidirectional=bidirectional,
                         dt_min=dt_min, dt_max=dt_max, activation=activation, output=output,
                         liquid_order=1, liquid_kernel="kb", dtype=dtype, param_dtype=param_dtype,
                         rngs=rngs)


class LiquidS4(_DPLRLayer):
    """Liquid-S4 layer: S4 plus the liquid kernel over input products up to order p.

    ``(b, L, d_model) → (b, L, d_model)`` with ``L ≤ l_max``; see the module docstring for
    the "kb" and "pb" kernels. Parameters are S4's (no extra ones: the liquid kernels reuse
    Λ, P, B, C̃, Δ). Bidirectional layers add the same terms for the time-reversed sequence
    (input products looking ahead).

    Args:
        liquid_order: p ≥ 2, the highest order of input products (2 by default, as the
            authors' public implementation).
        liquid_kernel: ``"pb"`` (only the ``C̄ B̄^q`` products: the liquid kernels' ℓ = 0
            taps) or ``"kb"`` (the full kernels ``C̄ Ā^ℓ B̄^q``).
        the rest: as :class:`S4`.

    Recurrent form: :meth:`step` keeps the S4 state ``(b, H, N)`` and the last p − 1 inputs.
    """

    def __init__(self, d_model: int, *, l_max: int, d_state: int = 64, liquid_order: int = 2,
                 liquid_kernel: LiquidKernel = "pb", bidirectional: bool = False,
                 dt_min: float = 0.001, dt_max: float = 0.1, activation: Activation = "gelu",
                 output: OutputMode = "glu", dtype: jnp.dtype | None = None,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        if not isinstance(liquid_order, int) or liquid_order < 2:
            raise ValueError(f"liquid_order is {liquid_order!r}, expected an integer >= 2 "
                             "(order 1 is plain S4)")
        super().__init__(d_model, l_max=l_max, d_state=d_state, bidirectional=bidirectional,
                         dt_min=dt_min, dt_max=dt_max, activation=activation, output=output,
                         liquid_order=liquid_order, liquid_kernel=liquid_kernel, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
