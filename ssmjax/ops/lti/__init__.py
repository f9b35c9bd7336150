"""Linear time-invariant state space models: S4 (DPLR), S4D (diagonal), S5 (MIMO diagonal)
and the liquid kernel of Liquid-S4. Discretisation, kernels, convolution and recurrences are
separate functions, each naming the equation it evaluates.

Continuous-time SSM and its discretisation with step Δ (S4, background section)::

    x'(t) = A x(t) + B u(t),   y(t) = C x(t) + D u(t)
    x_k = Ā x_{k−1} + B̄ u_k,  y_k = C̄ x_k + D u_k

    zero-order hold (ZOH):  Ā = exp(ΔA),                      B̄ = A⁻¹ (Ā − I) B
    bilinear:               Ā = (I − Δ/2 A)⁻¹ (I + Δ/2 A),     B̄ = (I − Δ/2 A)⁻¹ Δ B

Unrolled from ``x_{−1} = 0`` the recurrence is a convolution with the SSM kernel K̄ (S4)::

    y = K̄ ∗ u + D u,   K̄ = (C̄ B̄, C̄ Ā B̄, …, C̄ Ā^{L−1} B̄)

Conjugate pairs: the state matrices here are complex and diagonal (or diagonal plus low rank)
in an eigenbasis of a real matrix, so their eigenvalues come in conjugate pairs. Arrays carry
one state of each pair (``n = N/2``); the other half is the complex conjugate and real outputs
are ``2 Re(·)`` of the kept half (as in S4D and S5). Functions that need the full basis
build it with :func:`conjugate_pairs`.

All arithmetic runs in float32 / complex64 for float32 inputs (float64 / complex128 for
float64 inputs under ``jax.enable_x64``). Layout of sequences is ``(batch, length, channels)``.

Modules, one per seam: ``discretize`` (ZOH, bilinear), ``diagonal`` (S4D's Vandermonde kernel
and recurrent views), ``conv`` (FFT convolution), ``dplr`` (S4's Cauchy/Woodbury kernel and
its recurrent view), ``dense`` (dense real recurrences), ``s5`` (S5's scan), ``liquid``
(Liquid-S4's input products and liquid input vectors), ``common`` (checks, dtypes, the
conjugate-pair basis). Everything public is importable from ``ssmjax.ops.lti``.
"""

from ssmjax.ops.lti.common import conjugate_pairs, right_align
from ssmjax.ops.lti.conv import fft_conv
from ssmjax.ops.lti.dense import (DenseRecurrence, dense_final_state, dense_power_apply,
                                  dense_power_series, dense_state_response, dense_step)
from ssmjax.ops.lti.diagonal import (diagonal_final_state, diagonal_powers, diagonal_state_response,
                                     diagonal_step, vandermonde_kernel)
from ssmjax.ops.lti.discretize import (DISCRETIZATIONS, DiagonalDiscretization, Discretization,
                                       discretize_bilinear, discretize_diagonal, discretize_zoh)
from ssmjax.ops.lti.dplr import dplr_bilinear, dplr_kernel, dplr_recurrence
from ssmjax.ops.lti.liquid import (dplr_bilinear_input, dplr_continuous_input, input_products,
                                   liquid_input_vectors, next_history)
from ssmjax.ops.lti.s5 import s5_scan, s5_step

__all__ = [
    "DISCRETIZATIONS", "DenseRecurrence", "DiagonalDiscretization", "Discretization", "conjugate_pairs",
    "dense_final_state", "dense_power_apply", "dense_power_series", "dense_state_response", "dense_step",
    "diagonal_final_state", "diagonal_powers", "diagonal_state_response", "diagonal_step",
    "discretize_bilinear", "discretize_diagonal", "discretize_zoh", "dplr_bilinear",
    "dplr_bilinear_input", "dplr_continuous_input", "dplr_kernel", "dplr_recurrence",
    "fft_conv", "input_products", "liquid_input_vectors", "next_history", "right_align", "s5_scan", "s5_step",
    "vandermonde_kernel",
]
