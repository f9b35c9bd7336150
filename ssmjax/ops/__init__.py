"""Pure functions on arrays: the selective scan, the LTI state space kernels and recurrences,
the causal convolution and SeRpEnt's resampling."""

from ssmjax.ops.conv import causal_conv1d, causal_conv1d_step
from ssmjax.ops.hippo import (hippo_legs, hippo_legs_nplr, hippo_n_blocks, s4d_inv_eigenvalues,
                              s4d_lin_eigenvalues)
from ssmjax.ops.lti import (DenseRecurrence, DiagonalDiscretization, discretize_bilinear,
                            discretize_diagonal, discretize_zoh, dplr_bilinear, dplr_kernel,
                            dplr_recurrence, fft_conv, input_products, liquid_input_vectors, s5_scan,
                            s5_step, vandermonde_kernel)
from ssmjax.ops.recurrence import linear_recurrence
from ssmjax.ops.reference import selective_scan_reference
from ssmjax.ops.resample import (ResamplingPlan, compress, compressed_length, decompress,
                                 gaussian_basis, knn_decompress, knn_interpolate, nearest_neighbors,
                                 resampling_plan, sample_times, time_intervals)
from ssmjax.ops.selective_scan import (BACKENDS, default_backend, segment_starts,
                                       selective_scan, selective_scan_step)

__all__ = [
    "BACKENDS", "DenseRecurrence", "DiagonalDiscretization", "ResamplingPlan", "causal_conv1d",
    "causal_conv1d_step", "compress", "compressed_length", "decompress", "default_backend",
    "discretize_bilinear", "discretize_diagonal", "discretize_zoh", "dplr_bilinear", "dplr_kernel",
    "dplr_recurrence", "fft_conv", "gaussian_basis", "hippo_legs", "hippo_legs_nplr",
    "hippo_n_blocks", "input_products", "knn_decompress", "knn_interpolate", "linear_recurrence",
    "liquid_input_vectors", "nearest_neighbors", "resampling_plan", "s4d_inv_eigenvalues",
    "s4d_lin_eigenvalues", "s5_scan", "s5_step", "sample_times", "segment_starts", "selective_scan",
    "selective_scan_reference", "selective_scan_step", "time_intervals", "vandermonde_kernel",
]
