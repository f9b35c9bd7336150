"""The SeRpEnt block (Rando et al. 2025, arXiv 2501.11729, §4.3 and Appendix B) over any SSM.

The block runs parallel branches on one input, each at its own compression rate κ, each with
its own inner SSM (:data:`INNER_SSMS`: Mamba, S4, S4D, S5, Liquid-S4, or one registered with
:func:`register_inner_ssm`), and joins them::

    (14a) x̂⁽ᵏ⁾ = compress_κₖ(x)          selective resampling, ssmjax.ops.resample (9–13)
    (14b) ŷ⁽ᵏ⁾ = SSMₖ(x̂⁽ᵏ⁾)               the branch's own SSM on the shorter sequence
    (15a) y⁽ᵏ⁾ = decompress(ŷ⁽ᵏ⁾)          nearest copy back to the original times
    (15b) out = x + concat_k y⁽ᵏ⁾         skip connection

plus one base branch without resampling (Appendix B.1: "a branch without resampling, as a
'base' branch which runs a simple LTI SSM along the whole sequence"). As for (9–13), the
typeset equations were not available to us: (14a–15b) above are rebuilt from the paper's
description of Figure 3 and §4.3. Branch widths: the model width is split
evenly between the branches (Appendix B.2 splits Mamba's inner width into three parallel
components), so the concatenation has the input's width and the skip needs no projection
(§4.3: features are already mixed linearly by the resampling (12a)); the base branch reads
its share through a position-wise linear map, its counterpart of (12a).

Normalisation follows the paper's two settings: ``norm="batch"`` puts a BatchNorm after the
skip connection (Appendix B.1, LRA); ``norm="rms"`` puts an RMSNorm before the branches,
pre-norm (Appendix B.2, language modelling).

Padding: ``mask: (b, L)`` bool, True = valid, inputs padded at the end. Padded positions
never reach a valid output: they take no part in the times, the neighbours or the
compressed lengths; every branch's inner SSM is a
:class:`~ssmjax.nn.protocols.SequenceMixer` and gets the mask of its own sequence (the
block's for the base branch, the valid grid points for a resampled one), so it never reads
padding either; BatchNorm statistics skip them; outputs there are zero.

The block is not causal (the resampling reads neighbours on both sides in time): it has no
recurrent form and refuses ``cache``, ``return_cache``, ``init_cache`` and ``step``.

Optimiser groups: the projections' and maps' weights are ``"decay"`` and their biases
``"no_decay"``, as everywhere. The Δ projection of (13) is SeRpEnt's selective step, the
counterpart of Mamba's Δ projection, and is grouped as that one: its weight ``"decay"``,
its bias (the offset b, like Mamba's Δ bias) ``"no_decay"``. The Gaussian means of (12b)
are positions on the axis of time differences, not weights: decay would pull every centre
towards a zero difference and narrow the basis, so they are ``"no_decay"``. None is
``"ssm"``: the resampling has no state space, and its maps learn at the rate of the
weights around them. BatchNorm's scale and bias are ``"no_decay"``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Mapping, NoReturn, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ssmjax.nn.initializers import ONES, ZEROS, Constant, FanInUniform, Uniform, linear, param
from ssmjax.nn.mamba import MambaMixer
from ssmjax.nn.norm import RMSNorm
from ssmjax.nn.partitioning import LOGICAL_AXES, axes
from ssmjax.nn.protocols import SequenceMixer, check_call, check_sequence, not_causal, sequence_lengths
from ssmjax.ops.resample import (SEARCH_METHODS, ResamplingPlan, compress, compressed_length,
                                 decompress, knn_decompress, lengths_from_mask, resampling_plan,
                                 time_intervals, valid_mask)

Norm = Literal["batch", "rms", "none"]
NORMS = ("batch", "rms", "none")
NOT_CAUSAL = "its resampling reads neighbours on both sides in time"

InnerSSMFactory = Callable[..., SequenceMixer]
"""``factory(d_model, *, max_length, dtype, param_dtype, rngs, **kwargs)`` → a
:class:`~ssmjax.nn.protocols.SequenceMixer` of width ``d_model``; ``max_length`` is the
longest sequence it will see (``None`` when the block was built without ``l_max``)."""


def _mamba(d_model: int, *, max_length: int | None, dtype, param_dtype, rngs: nnx.Rngs,
           **kwargs) -> SequenceMixer:
    del max_length  # any length
    return MambaMixer(d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **kwargs)


def _needs_length(name: str, max_length: int | None) -> int:
    if max_length is None:
        raise ValueError(f"ssm {name!r} needs l_max, the longest input length (its kernel has "
                         "that length); pass l_max to SeRpEntBlock")
    return max_length


# The LTI layers are imported when chosen, so that a Mamba-only block does not depend on them.
def _s4(d_model: int, *, max_length: int | None, dtype, param_dtype, rngs: nnx.Rngs,
        **kwargs) -> SequenceMixer:
    from ssmjax.nn.s4 import S4
    return S4(d_model, l_max=_needs_length("s4", max_length), dtype=dtype,
              param_dtype=param_dtype, rngs=rngs, **kwargs)


def _liquid_s4(d_model: int, *, max_length: int | None, dtype, param_dtype, rngs: nnx.Rngs,
               **kwargs) -> SequenceMixer:
    from ssmjax.nn.s4 import LiquidS4
    return LiquidS4(d_model, l_max=_needs_length("liquid_s4", max_length), dtype=dtype,
                    param_dtype=param_dtype, rngs=rngs, **kwargs)


def _s4d(d_model: int, *, max_length: int | None, dtype, param_dtype, rngs: nnx.Rngs,
         **kwargs) -> SequenceMixer:
    from ssmjax.nn.s4d import S4D
    del max_length
    return S4D(d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **kwargs)


def _s5(d_model: int, *, max_length: int | None, dtype, param_dtype, rngs: nnx.Rngs,
        **kwargs) -> SequenceMixer:
    from ssmjax.nn.s5 import S5
    del max_length
    return S5(d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **kwargs)


INNER_SSMS: dict[str, InnerSSMFactory] = {
    "mamba": _mamba, "s4": _s4, "s4d": _s4d, "s5": _s5, "liquid_s4": _liquid_s4}


def register_inner_ssm(name: str, factory: InnerSSMFactory, *, overwrite: bool = False) -> None:
    """Makes ``ssm=name`` build its inner layers with ``factory`` (see :data:`InnerSSMFactory`)."""
    if name in INNER_SSMS and not overwrite:
        raise ValueError(f"ssm {name!r} is already registered; pass overwrite=True to replace it")
    INNER_SSMS[name] = factory


def make_inner_ssm(name: str, d_model: int, *, max_length: int | None = None,
                   dtype: jnp.dtype | None = None, param_dtype: jnp.dtype = jnp.float32,
                   rngs: nnx.Rngs, **kwargs: Any) -> SequenceMixer:
    """The inner SSM ``name`` of width ``d_model``; ``kwargs`` go to its constructor."""
    if name not in INNER_SSMS:
        raise ValueError(f"ssm is {name!r}, expected one of {sorted(INNER_SSMS)} "
                         "(or register one with register_inner_ssm)")
    return INNER_SSMS[name](d_model, max_length=max_length, dtype=dtype,
                            param_dtype=param_dtype, rngs=rngs, **kwargs)


def default_basis_gamma(span: float, num_basis: int) -> float:
    """γ of (12b) for ``num_basis`` means spread over ``[−span, span]``: each Gaussian's
    standard deviation is the mean spacing ``2·span / num_basis`` (SchNet's choice of a width
    equal to the spacing of the centres)."""
    sigma = 2.0 * span / num_basis
    return 1.0 / (2.0 * sigma * sigma)


class _KNNMap(nnx.Module):
    """The learnable parts of (12a)–(12b) for windows of k neighbours: basis means ``(m,)``,
    kernel ``(k, d_in + m, d_out)`` over the concatenation (PyTorch's default Linear
    initialisation for its fan-in) and bias ``(d_out,)``."""

    def __init__(self, d_in: int, d_out: int, *, window: int, num_basis: int, span: float,
                 gamma: float | None, param_dtype: jnp.dtype, rngs: nnx.Rngs):
        self.gamma = float(gamma) if gamma is not None else default_basis_gamma(span, num_basis)
        options = dict(param_dtype=param_dtype, rngs=rngs)
        # Random means, learnable (§4.2), over the range the time differences can take.
        self.means = param(Uniform.symmetric(span), (num_basis,), None, group="no_decay", **options)
        bound = Uniform.symmetric(1.0 / math.sqrt(window * (d_in + num_basis)))
        self.kernel = param(bound, (window, d_in + num_basis, d_out), None, None, "embed",
                            group="decay", **options)
        self.bias = param(bound, (d_out,), "embed", group="no_decay", **options)

    def arguments(self) -> dict[str, Any]:
        return dict(means=self.means[...], width=self.gamma, kernel=self.kernel[...],
                    bias=self.bias[...])


class BaseBranch(nnx.Module):
    """The branch without resampling: a position-wise linear map to the branch width and the
    inner SSM on the whole sequence. ``(b, L, d_model) → (b, L, d_branch)``."""

    def __init__(self, d_model: int, d_branch: int, inner: SequenceMixer, *,
                 dtype: jnp.dtype | None, param_dtype: jnp.dtype, rngs: nnx.Rngs):
        self.proj = linear(d_model, d_branch, kernel_init=FanInUniform(), kernel_axes=("embed", None),
                           bias_init=Uniform.symmetric(1.0 / math.sqrt(d_model)), dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)
        self.inner = inner

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        """``x: (b, L, d_model)``, ``mask: (b, L)`` bool or None → ``(b, L, d_branch)``, zero
        at padded positions."""
        return self.inner(self.proj(x), mask=mask)[0]


class ResampledBranch(nnx.Module):
    """One branch at compression rate κ: Δ (13), times (9), grid (11), compression (12),
    the inner SSM on the compressed sequence (14b), reverse resampling (15a).
    ``(b, L, d_model) → (b, L, d_branch)``.

    Args:
        d_model, d_branch: input width and this branch's width.
        inner: the SSM, a SequenceMixer ``(b, L', d_branch) → (b, L', d_branch)``.
        rate: κ ≥ 1; L' = ⌈L/κ⌉.
        window: k, input neighbours of each grid point.
        num_basis: m, Gaussians per time difference (12b).
        basis_gamma: γ of (12b); None: :func:`default_basis_gamma` over the differences'
            range (``±k/(2κ)`` when compressing, ``±k'/2`` when decompressing).
        decompress_window: 1 copies the nearest compressed output (the paper's choice);
            k' > 1 reads k' grid points through a learnable map of form (12a).
        delta_bias_init: initial b in (13); 0 gives Δ ≈ 1/(2κ) at the start.
        search_method: ``jnp.searchsorted`` method for the neighbour search.
    """

    def __init__(self, d_model: int, d_branch: int, inner: SequenceMixer, *, rate: float,
                 window: int, num_basis: int, basis_gamma: float | None, decompress_window: int,
                 delta_bias_init: float, search_method: str, dtype: jnp.dtype | None,
                 param_dtype: jnp.dtype, rngs: nnx.Rngs):
        self.rate = float(rate)
        self.window = window
        self.decompress_window = decompress_window
        self.search_method = search_method
        self.dtype = dtype
        self.delta_proj = linear(d_model, 1, kernel_init=FanInUniform(), kernel_axes=("embed", None),
                                 bias_init=Constant(float(delta_bias_init)), param_dtype=param_dtype,
                                 rngs=rngs)
        self.compression = _KNNMap(d_model, d_branch, window=window, num_basis=num_basis,
                                   span=window / (2.0 * rate), gamma=basis_gamma,
                                   param_dtype=param_dtype, rngs=rngs)
        self.inner = inner
        self.decompression = (
            _KNNMap(d_branch, d_branch, window=decompress_window, num_basis=num_basis,
                    span=decompress_window / 2.0, gamma=basis_gamma, param_dtype=param_dtype,
                    rngs=rngs) if decompress_window > 1 else None)

    def plan(self, x: jax.Array, mask: jax.Array | None) -> ResamplingPlan:
        """Δ, times, grid and neighbour assignments for ``x: (b, L, d_model)``."""
        delta = time_intervals(x, self.delta_proj.kernel[...][:, 0], self.delta_proj.bias[...],
                               rate=self.rate, mask=mask)
        return resampling_plan(delta, rate=self.rate, window=self.window, mask=mask,
                               method=self.search_method)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        """``x: (b, L, d_model)``, ``mask: (b, L)`` or None → ``(b, L, d_branch)``."""
        plan = self.plan(x, mask)
        compressed = compress(x.astype(self.dtype or x.dtype), plan,
                              **self.compression.arguments())
        out, _ = self.inner(compressed, mask=plan.compressed_mask)
        if self.decompression is None:
            return decompress(out, plan)
        return knn_decompress(out, plan, window=self.decompress_window,
                              method=self.search_method, **self.decompression.arguments())


class SeRpEntBlock(nnx.Module):
    """SeRpEnt block: ``(b, L, d_model) → (b, L, d_model)``, with an optional padding mask; a
    :class:`~ssmjax.nn.protocols.SequenceMixer` that is not causal.

    Args:
        d_model: width; split evenly between the branches (it must divide).
        compression_rates: κ of each resampled branch (each ≥ 1).
        base_branch: add the branch without resampling (Appendix B.1).
        window: k of (12a) (the paper's LRA runs use 5 to 7).
        num_basis: m of (12b) (its value for the paper's runs is not in the text we had).
        basis_gamma, decompress_window, delta_bias_init, search_method: see
            :class:`ResampledBranch`.
        ssm: inner SSM of every branch, a key of :data:`INNER_SSMS`.
        ssm_kwargs: passed to each inner SSM's constructor (e.g. ``d_state``).
        l_max: longest input; needed by S4 and Liquid-S4 (each resampled branch gets
            ``⌈l_max/κ⌉``).
        norm: ``"batch"`` (after the skip, LRA), ``"rms"`` (before the branches, LM), or
            ``"none"``.
        norm_eps: epsilon of the norm; batch_norm_momentum: of the running statistics
            (0.9 is PyTorch's default momentum 0.1).
        dtype: compute dtype (None: the input's); parameters are ``param_dtype``.

    In training, a BatchNorm block uses batch statistics over the valid positions and
    updates its running averages; ``block.eval()`` switches it to the running averages.
    """

    causal = False

    def __init__(self, d_model: int, *, compression_rates: Sequence[float] = (2.0, 4.0),
                 base_branch: bool = True, window: int = 5, num_basis: int = 16,
                 basis_gamma: float | None = None, decompress_window: int = 1,
                 ssm: str = "mamba", ssm_kwargs: Mapping[str, Any] | None = None,
                 l_max: int | None = None, norm: Norm = "rms", norm_eps: float = 1e-5,
                 batch_norm_momentum: float = 0.9, delta_bias_init: float = 0.0,
                 search_method: str = "scan", dtype: jnp.dtype | None = None,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        rates = tuple(float(rate) for rate in compression_rates)
        branches = len(rates) + int(base_branch)
        if branches == 0:
            raise ValueError("compression_rates is empty and base_branch is False: no branch to run")
        if any(rate < 1.0 for rate in rates):
            raise ValueError(f"compression_rates is {rates}, expected every rate κ >= 1")
        if d_model % branches:
            raise ValueError(f"d_model is {d_model}, expected a multiple of the {branches} branches "
                             f"(compression_rates={rates}, base_branch={base_branch})")
        for name, value in (("window", window), ("num_basis", num_basis),
                            ("decompress_window", decompress_window)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} is {value!r}, expected a positive integer")
        if norm not in NORMS:
            raise ValueError(f"norm is {norm!r}, expected one of {NORMS}")
        if search_method not in SEARCH_METHODS:
            raise ValueError(f"search_method is {search_method!r}, expected one of {SEARCH_METHODS}")
        if ssm not in INNER_SSMS:
            raise ValueError(f"ssm is {ssm!r}, expected one of {sorted(INNER_SSMS)} "
                             "(or register one with register_inner_ssm)")
        self.d_model = d_model
        self.d_branch = d_model // branches
        self.compression_rates = rates
        self.base_branch = base_branch
        self.norm_kind = norm
        self.dtype = dtype
        ssm_kwargs = dict(ssm_kwargs or {})
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        def inner(max_length: int | None) -> SequenceMixer:
            return make_inner_ssm(ssm, self.d_branch, max_length=max_length, **common, **ssm_kwargs)

        self.base = BaseBranch(d_model, self.d_branch, inner(l_max), **common) if base_branch else None
        self.resampled = nnx.List([
            ResampledBranch(d_model, self.d_branch,
                            inner(None if l_max is None else compressed_length(l_max, rate)),
                            rate=rate, window=window, num_basis=num_basis,
                            basis_gamma=basis_gamma, decompress_window=decompress_window,
                            delta_bias_init=delta_bias_init, search_method=search_method,
                            **common)
            for rate in rates])
        if norm == "batch":
            self.norm = nnx.BatchNorm(d_model, momentum=batch_norm_momentum, epsilon=norm_eps,
                                      scale_init=ONES, bias_init=ZEROS,
                                      scale_metadata=axes("embed", group="no_decay", init=ONES),
                                      bias_metadata=axes("embed", group="no_decay", init=ZEROS),
                                      **common)
            for statistic in (self.norm.mean, self.norm.var):
                statistic.set_metadata(**{LOGICAL_AXES: ("embed",)})
        elif norm == "rms":
            self.norm = RMSNorm(d_model, eps=norm_eps, dtype=dtype, param_dtype=param_dtype)
        else:
            self.norm = None

    def _branch_input(self, hidden: jax.Array, valid: jax.Array) -> jax.Array:
        x = jnp.where(valid[..., None], hidden, 0)
        if self.norm_kind == "rms":
            x = self.norm(x)
        return x.astype(self.dtype) if self.dtype is not None else x

    def _valid(self, hidden: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
        """``(valid (b, L) bool, the branches' mask)``: the valid prefix of each row (a mask with
        holes counts as ending at its first False), and None for the branches without a mask."""
        batch, length, _ = hidden.shape
        valid = valid_mask(lengths_from_mask(mask, batch, length), length)
        return valid, None if mask is None else valid

    def __call__(self, hidden: jax.Array, *, mask: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: None = None,
                 return_cache: bool = False) -> tuple[jax.Array, None]:
        """``hidden: (b, L, d_model)``, ``mask: (b, L)`` bool (True = valid, padding at the
        end) → ``((b, L, d_model), None)``, zero at padded positions. ``cache`` and
        ``return_cache`` are refused: the block is not causal."""
        check_call(self, hidden, mask=mask, segment_ids=segment_ids, cache=cache,
                   return_cache=return_cache, why_not_causal=NOT_CAUSAL)
        valid, branch_mask = self._valid(hidden, mask)
        x = self._branch_input(hidden, valid)
        outputs = [] if self.base is None else [self.base(x, branch_mask)]
        outputs += [branch(x, branch_mask) for branch in self.resampled]
        residual = jnp.where(valid[..., None], hidden, 0)
        out = residual + jnp.concatenate(outputs, axis=-1).astype(hidden.dtype)
        if self.norm_kind == "batch":
            out = self.norm(out, mask=jnp.broadcast_to(valid[..., None], out.shape)).astype(hidden.dtype)
        return jnp.where(valid[..., None], out, 0), None

    def init_cache(self, batch_size: int, dtype: jnp.dtype | None = None) -> NoReturn:
        """Refused: the block has no recurrent form."""
        raise not_causal("init_cache", self, NOT_CAUSAL)

    def step(self, hidden_t: jax.Array, cache: Any, **hooks: Any) -> NoReturn:
        """Refused: the block has no recurrent form."""
        raise not_causal("step", self, NOT_CAUSAL)

    def resampling_plans(self, hidden: jax.Array, *,
                         mask: jax.Array | None = None) -> tuple[ResamplingPlan, ...]:
        """For visualisation: each resampled branch's :class:`~ssmjax.ops.resample.ResamplingPlan`
        (Δ, times, grid, compressed lengths, neighbours of each grid point, grid point of each
        input), in the order of ``compression_rates``."""
        check_sequence(hidden, self.d_model)
        sequence_lengths(mask, hidden)
        valid, branch_mask = self._valid(hidden, mask)
        x = self._branch_input(hidden, valid)
        return tuple(branch.plan(x, branch_mask) for branch in self.resampled)
