"""Mamba language model: embedding, a stack of residual Mamba blocks, final norm, LM head.

``MambaConfig.mixer`` swaps the sequence layer of every block, for the Mamba paper's
ablations on the synthetic tasks (Table 1) and SeRpEnt:

    "mamba"          RMSNorm → MambaMixer (gated S6) → residual: the Mamba LM
    "s6"             the same block without the SiLU(z) gate (Table 1's "no gate" S6)
    "s4"             RMSNorm → the same gate-less block with S4 (LTI, HiPPO DPLR) in place of
                     the selective scan → residual (Table 1's "no gate" S4)
    "serpent_mamba"  SeRpEntBlock (pre-norm, parallel resampled branches of MambaMixers, skip)

Every block is a :class:`~ssmjax.nn.protocols.SequenceMixer`. "mamba" and "s6" step with
MambaCaches, "s4" with NoGateCaches (conv state, S4 state). "serpent_mamba" has no recurrent
form and refuses caches; nor is it causal: its resampling reads neighbours on both sides in
time, so an output may depend on later inputs. That is harmless where no later input holds a
scored position's answer (Selective Copying, Induction Heads), not in next-token language
modelling.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from ssmjax.nn import S4, MambaMixer, NoGateBlock, ResidualBlock, RMSNorm, SeRpEntBlock
from ssmjax.nn.initializers import LecunNormal, Normal, linear
from ssmjax.nn.partitioning import axes
from ssmjax.nn.protocols import Cache, SequenceMixer
from ssmjax.ops.selective_scan import BACKENDS, SCAN_CHUNK_SIZE

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
MIXERS = ("mamba", "s6", "s4", "serpent_mamba")


@dataclasses.dataclass(frozen=True)
class MambaConfig:
    """Hyper-parameters of :class:`MambaLM`; defaults are mamba-ssm's.

    ``mixer`` picks the sequence layer of each block (module docstring). ``l_max`` is the
    longest input, needed by ``"s4"`` (its kernel has that length). The ``serpent_*``
    fields configure ``"serpent_mamba"``: compression rates κ of the resampled branches
    (plus one base branch; ``d_model`` must divide by the number of branches), window k
    and number of Gaussians m (see :class:`ssmjax.nn.SeRpEntBlock`); its inner MambaMixers
    take ``d_state``, ``d_conv``, ``expand`` and the Δ fields from here.
    """

    d_model: int = 768
    n_layer: int = 24
    vocab_size: int = 50277
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0
    conv_bias: bool = True
    bias: bool = False
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True
    dtype: str = "float32"
    scan_backend: str = "auto"
    chunk_size: int = SCAN_CHUNK_SIZE
    mixer: str = "mamba"
    l_max: int | None = None
    serpent_compression_rates: tuple[float, ...] = (2.0, 4.0)
    serpent_window: int = 5
    serpent_num_basis: int = 16

    def __post_init__(self):
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand",
                     "pad_vocab_size_multiple", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}, expected a positive integer")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype is {self.dtype!r}, expected one of {tuple(DTYPES)}")
        if self.scan_backend not in BACKENDS:
            raise ValueError(f"scan_backend is {self.scan_backend!r}, expected one of {BACKENDS}")
        if self.dt_rank != "auto" and not (isinstance(self.dt_rank, int) and self.dt_rank >= 1):
            raise ValueError(f"dt_rank is {self.dt_rank!r}, expected 'auto' or a positive integer")
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer is {self.mixer!r}, expected one of {MIXERS}")
        if self.l_max is not None and not (isinstance(self.l_max, int) and self.l_max >= 1):
            raise ValueError(f"l_max is {self.l_max!r}, expected None or a positive integer")
        if self.mixer == "s4" and self.l_max is None:
            raise ValueError("l_max is None, but mixer 's4' needs it: the longest input length "
                             "(the length of S4's convolution kernel)")
        # A config read back from JSON holds a list here; a tuple keeps it hashable and equal.
        object.__setattr__(self, "serpent_compression_rates",
                           tuple(float(rate) for rate in self.serpent_compression_rates))
        if any(rate < 1.0 for rate in self.serpent_compression_rates):
            raise ValueError(f"serpent_compression_rates is {self.serpent_compression_rates}, "
                             "expected every rate κ >= 1")
        for name in ("serpent_window", "serpent_num_basis"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}, expected a positive integer")

    @property
    def recurrent(self) -> bool:
        """Whether the model has a step-by-step form (``init_cache``, ``step``, caches)."""
        return self.mixer != "serpent_mamba"

    @property
    def padded_vocab_size(self) -> int:
        """Vocabulary rounded up to ``pad_vocab_size_multiple`` (rows of the embedding)."""
        multiple = self.pad_vocab_size_multiple
        return math.ceil(self.vocab_size / multiple) * multiple

    @property
    def compute_dtype(self) -> jnp.dtype:
        return DTYPES[self.dtype]

    @property
    def residual_dtype(self) -> jnp.dtype:
        """The residual stream's dtype: float32 with ``residual_in_fp32``, else the compute dtype."""
        return jnp.float32 if self.residual_in_fp32 else self.compute_dtype

    @classmethod
    def mamba_130m(cls, **overrides) -> MambaConfig:
        """state-spaces/mamba-130m: 24 layers of width 768."""
        return cls(**{"d_model": 768, "n_layer": 24, **overrides})

    @classmethod
    def mamba_370m(cls, **overrides) -> MambaConfig:
        """state-spaces/mamba-370m: 48 layers of width 1024."""
        return cls(**{"d_model": 1024, "n_layer": 48, **overrides})


class MambaLM(nnx.Module):
    """Causal language model: ``token ids (b, l) → logits (b, l, vocab_size)`` float32.

    The embedding has ``padded_vocab_size`` rows (as mamba-ssm's checkpoints); logits are
    returned for the real ``vocab_size`` only, so padding rows can never be predicted. Every
    block is a :class:`~ssmjax.nn.protocols.SequenceMixer`; ``mask``, ``segment_ids`` and the
    caches go to each of them.

    Optimiser groups: the embedding and an untied head ``"decay"``, the final norm
    ``"no_decay"``; each block's parameters as its mixer says.
    """

    def __init__(self, config: MambaConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = config.compute_dtype
        embedding_init = Normal(0.02)
        self.embedding = nnx.Embed(config.padded_vocab_size, config.d_model, dtype=dtype,
                                   embedding_init=embedding_init,
                                   embedding_metadata=axes("vocab", "embed", group="decay",
                                                           init=embedding_init), rngs=rngs)
        self.layers: nnx.List[SequenceMixer] = nnx.List(
            [_make_layer(config, dtype, rngs) for _ in range(config.n_layer)])
        self.norm_f = RMSNorm(config.d_model, eps=config.norm_eps, dtype=dtype)
        self.lm_head = None if config.tie_embeddings else linear(
            config.d_model, config.padded_vocab_size, kernel_init=LecunNormal(),
            kernel_axes=("embed", "vocab"), use_bias=False, dtype=dtype, rngs=rngs)

    @property
    def causal(self) -> bool:
        """Whether every block is causal: the model then has its recurrent form."""
        return all(layer.causal for layer in self.layers)

    def _check_recurrent(self, what: str) -> None:
        if not self.causal:
            raise ValueError(f"{what}: mixer {self.config.mixer!r} has no recurrent form; "
                             "call the model on whole sequences without a cache")

    def _check_ids(self, input_ids: jax.Array, ndim: int, expected: str) -> None:
        if input_ids.ndim != ndim or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)} and dtype "
                             f"{input_ids.dtype}, expected integer ids of shape {expected}")

    def _check_cache(self, cache: list[Cache] | None) -> None:
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(f"cache has {len(cache)} layers, expected one per layer "
                             f"({len(self.layers)})")

    def embed(self, input_ids: jax.Array) -> jax.Array:
        """Token ids ``(...)`` → the residual stream's input ``(..., d_model)`` in
        ``config.residual_dtype``."""
        return self.embedding(input_ids).astype(self.config.residual_dtype)

    def _blocks(self, input_ids: jax.Array, *, mask: jax.Array | None,
                segment_ids: jax.Array | None, cache: list[Cache] | None,
                return_cache: bool) -> tuple[jax.Array, list[Cache] | None]:
        """The residual stream after the last block ``(b, l, d_model)`` and, with
        ``return_cache``, each block's cache."""
        if cache is not None or return_cache:
            self._check_recurrent("cache" if cache is not None else "return_cache")
        self._check_ids(input_ids, 2, "(batch, length)")
        self._check_cache(cache)
        residual, new_cache = self.embed(input_ids), []
        for index, layer in enumerate(self.layers):
            residual, layer_cache = layer(residual, mask=mask, segment_ids=segment_ids,
                                          cache=None if cache is None else cache[index],
                                          return_cache=return_cache)
            new_cache.append(layer_cache)
        return residual, new_cache if return_cache else None

    def backbone(self, input_ids: jax.Array, *, mask: jax.Array | None = None,
                 cache: list[Cache] | None = None) -> tuple[jax.Array, list[Cache]]:
        """``input_ids: (b, l)`` → residual stream after the last block ``(b, l, d_model)`` and
        the per-layer recurrent states after each row's last valid position.

        The head is left to :meth:`head` so that a prefill can take the logits of one position:
        ``(b, l, vocab)`` logits of a long prompt may not fit in memory.
        """
        self._check_recurrent("backbone")
        return self._blocks(input_ids, mask=mask, segment_ids=None, cache=cache, return_cache=True)

    def head(self, residual: jax.Array) -> jax.Array:
        """Residual stream ``(..., d_model)`` → logits ``(..., vocab_size)`` float32 (final norm
        and the tied or separate LM head)."""
        hidden = self.norm_f(residual)
        weight = (self.embedding.embedding[...].T if self.lm_head is None
                  else self.lm_head.kernel[...])
        return jnp.matmul(hidden, weight[:, :self.config.vocab_size].astype(hidden.dtype),
                          preferred_element_type=jnp.float32)

    def __call__(self, input_ids: jax.Array, *, mask: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: list[Cache] | None = None,
                 return_cache: bool = False):
        """``input_ids: (b, l)`` int → logits ``(b, l, vocab_size)`` float32.

        ``mask: (b, l)`` bool marks the valid tokens (padding at the end; logits there are
        zero); ``segment_ids`` is refused by the blocks for now (see
        :mod:`ssmjax.nn.protocols`). With ``cache`` the sequence continues from it; with
        ``return_cache`` the per-layer recurrent states after each row's last valid position
        are returned too, ``(logits, cache)`` (a parallel prefill).
        """
        residual, new_cache = self._blocks(input_ids, mask=mask, segment_ids=segment_ids,
                                           cache=cache, return_cache=return_cache)
        logits = self.head(residual)
        return (logits, new_cache) if return_cache else logits

    def init_cache(self, batch_size: int) -> list[Cache]:
        """Zero recurrent state of every layer for ``batch_size`` sequences."""
        self._check_recurrent("init_cache")
        return [layer.init_cache(batch_size) for layer in self.layers]

    def step(self, input_ids_t: jax.Array, cache: list[Cache], *,
             state_update: Callable | None = None) -> tuple[jax.Array, list[Cache]]:
        """One position: ``input_ids_t: (b,)`` → logits ``(b, vocab_size)`` and the next cache.

        ``state_update`` goes to every block's ``step`` (``MambaMixer``'s hook, e.g. the fused
        kernel of :mod:`ssmjax.generate.fused_step`); None keeps each block's own update.
        """
        self._check_recurrent("step")
        self._check_ids(input_ids_t, 1, "(batch,)")
        self._check_cache(cache)
        hooks = {} if state_update is None else {"state_update": state_update}
        residual = self.embed(input_ids_t)
        new_cache = []
        for layer, layer_cache in zip(self.layers, cache):
            residual, layer_cache = layer.step(residual, layer_cache, **hooks)
            new_cache.append(layer_cache)
        return self.head(residual), new_cache


def _make_layer(config: MambaConfig, dtype: jnp.dtype, rngs: nnx.Rngs) -> SequenceMixer:
    """One block of ``config.mixer``: ``(b, l, d_model) → (b, l, d_model)`` on the residual stream."""
    # mamba-ssm scales the out projection by 1/sqrt(n_layer) so the residual stream's variance
    # does not grow with depth; the SeRpEnt branches' MambaMixers are scaled the same way.
    out_init_scale = 1.0 / math.sqrt(config.n_layer)
    mamba = dict(d_state=config.d_state, d_conv=config.d_conv, expand=config.expand,
                 dt_rank=config.dt_rank, dt_min=config.dt_min, dt_max=config.dt_max,
                 dt_init_floor=config.dt_init_floor, dt_scale=config.dt_scale,
                 conv_bias=config.conv_bias, bias=config.bias, out_init_scale=out_init_scale,
                 scan_backend=config.scan_backend, chunk_size=config.chunk_size)
    if config.mixer in ("mamba", "s6"):
        mixer = MambaMixer(config.d_model, gated=config.mixer == "mamba", dtype=dtype, rngs=rngs,
                           **mamba)
        return ResidualBlock(mixer, norm_eps=config.norm_eps)
    if config.mixer == "s4":
        # The paper's Table 1 S4 row: the gate-less Mamba block with S4 as its sequence layer
        # (no GELU/GLU head of its own: the block's projections play that part).
        layer = S4(config.expand * config.d_model, l_max=config.l_max, d_state=config.d_state,
                   activation=None, output="none", dtype=dtype, rngs=rngs)
        mixer = NoGateBlock(config.d_model, layer, d_conv=config.d_conv, conv_bias=config.conv_bias,
                            bias=config.bias, out_init_scale=out_init_scale, dtype=dtype, rngs=rngs)
        return ResidualBlock(mixer, norm_eps=config.norm_eps)
    return SeRpEntBlock(config.d_model, compression_rates=config.serpent_compression_rates,
                        window=config.serpent_window, num_basis=config.serpent_num_basis,
                        ssm="mamba", ssm_kwargs=mamba, l_max=config.l_max, norm="rms",
                        norm_eps=config.norm_eps, dtype=dtype, rngs=rngs)


def count_params(model: nnx.Module) -> int:
    """Number of scalar parameters of ``model``."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
