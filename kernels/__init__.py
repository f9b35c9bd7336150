"""Pallas kernels for ssmjax. Depends on jax only (never imports ``ssmjax``).

``selective_scan`` is the GPU (Triton) scan; the TPU (Mosaic) one, with the same contract
plus segment resets, is ``selective_scan_tpu.selective_scan``.
"""

from . import selective_scan_tpu
from .selective_scan_gpu import default_block_sizes, selective_scan
from .selective_state_update_gpu import selective_state_update

__all__ = ["default_block_sizes", "selective_scan", "selective_scan_tpu", "selective_state_update"]
