"""Prefill and decode for :class:`~ssmjax.models.MambaLM`.

**Prefill** runs the prompt through the parallel scan and keeps only what decoding needs:
the per-layer recurrent state (conv inputs and SSM state) after the last prompt token and
that token's logits. Nothing is ever decoded token by token during the prefill.

**Prompts of different lengths.** A recurrent model has no attention mask: every token it
reads moves the state, so padding may never be read. Prompts are given left-aligned in a
``(batch, width)`` array with their lengths, and each prompt is consumed in power-of-two
pieces that follow the binary digits of its length (13 = 8 + 4 + 1): the batch runs one
parallel prefill per piece size, from the largest down, each row reading the next ``size``
tokens of its own prompt, and a row whose length has no such digit keeps its state through
a select. Every row thus sees exactly its own tokens in order; the rows never interact, so a
continuation cannot depend on the other prompts in its batch. The work is at most twice
that of a prefill of ``width`` tokens, and ``chunk_size`` bounds the longest piece (pieces
of that size repeat in a ``lax.scan``), so prefill memory stays bounded for long prompts.

**Decode** is one jit-compiled ``lax.while_loop`` around ``MambaLM.step``: constant memory
and time per token. It stops when every row has emitted an EOS token or after
``max_new_tokens``. EOS and pad ids are run-time values; what shapes the program
(``max_new_tokens``, the sampling rule, ``return_logits``, the step backend) is static.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssmjax.generate.sampling import SamplingConfig, sample_logits
from ssmjax.models import MambaLM
from ssmjax.nn.protocols import Cache, cache_batch_size

DECODE_BACKENDS = ("auto", "xla", "pallas")
ModelCache = list[Cache]  # one recurrent cache per layer (MambaCache, or NoGateCache for mixer "s4")


class GenerationOutput(NamedTuple):
    """Result of :func:`generate` / :func:`decode`.

    Attributes:
        tokens: ``(batch, max_new_tokens)`` int32; after a row's EOS, ``pad_token_id``.
        num_generated: ``(batch,)`` int32, tokens generated per row, its EOS included.
        steps: int32 scalar, decode iterations run (less than ``max_new_tokens`` when every
            row stopped early).
        logits: ``(batch, max_new_tokens, vocab_size)`` float32, the distribution each token
            was drawn from (zeros after a row stopped), when asked for; else ``None``.
    """

    tokens: jax.Array
    num_generated: jax.Array
    steps: jax.Array
    logits: jax.Array | None = None


def _select_rows(active: jax.Array, new, old):
    """Per row, ``new`` where ``active`` else ``old``, over matching pytrees of ``(b, ...)``."""
    def pick(n, o):
        return jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def _piece_sizes(width: int, chunk_size: int) -> list[int]:
    """Power-of-two piece sizes below ``chunk_size`` that a length ≤ ``width`` may need."""
    largest = min(width, chunk_size - 1)
    return [1 << bit for bit in reversed(range(largest.bit_length()))]


def _static_pieces(length: int, chunk_size: int) -> list[int]:
    """Pieces of one known length: whole chunks, then the binary digits of the rest."""
    pieces = [chunk_size] * (length // chunk_size)
    rest = length % chunk_size
    return pieces + [1 << bit for bit in reversed(range(rest.bit_length())) if rest >> bit & 1]


def _prefill_impl(model: MambaLM, prompt_ids: jax.Array, prompt_lengths: jax.Array | None,
                  chunk_size: int, cache: ModelCache | None = None) -> tuple[jax.Array, ModelCache]:
    batch, width = prompt_ids.shape
    if prompt_lengths is None:
        # Every row is full: the pieces are known when tracing, no row is ever idle.
        offset, residual = 0, None
        pieces = _static_pieces(width, chunk_size)
        whole_chunks = sum(1 for size in pieces if size == chunk_size)
        if whole_chunks > 1:
            chunks = prompt_ids[:, :whole_chunks * chunk_size].reshape(batch, whole_chunks, chunk_size)

            def run_chunk(carry, ids):
                residual, layer_cache = model.backbone(ids, cache=carry)
                return layer_cache, residual[:, -1]

            cache = model.init_cache(batch) if cache is None else cache
            cache, last = jax.lax.scan(run_chunk, cache, jnp.swapaxes(chunks, 0, 1))
            residual, offset = last[-1][:, None], whole_chunks * chunk_size
            pieces = pieces[whole_chunks:]
        for size in pieces:
            residual, cache = model.backbone(prompt_ids[:, offset:offset + size], cache=cache)
            offset += size
        return model.head(residual[:, -1]), cache

    lengths = prompt_lengths.astype(jnp.int32)
    cache = model.init_cache(batch) if cache is None else cache
    last_hidden = jnp.zeros((batch, model.config.d_model), model.config.residual_dtype)
    offsets = jnp.zeros((batch,), jnp.int32)

    def take(size, offsets):
        return jax.vmap(lambda row, start: jax.lax.dynamic_slice(row, (start,), (size,)))(
            prompt_ids, offsets)

    def advance(active, size, cache, last_hidden, offsets, ids):
        residual, new_cache = model.backbone(ids, cache=cache)
        return (_select_rows(active, new_cache, cache),
                jnp.where(active[:, None], residual[:, -1], last_hidden),
                offsets + jnp.where(active, size, 0))

    whole_chunks = width // chunk_size
    if whole_chunks:
        def run_chunk(carry, index):
            cache, last_hidden, offsets = carry
            active = index < lengths // chunk_size
            return advance(active, chunk_size, cache, last_hidden, offsets,
                           take(chunk_size, offsets)), None

        (cache, last_hidden, offsets), _ = jax.lax.scan(
            run_chunk, (cache, last_hidden, offsets), jnp.arange(whole_chunks))
    for size in _piece_sizes(width, chunk_size):
        active = ((lengths % chunk_size) & size) != 0
        # Skip the piece at run time when no row needs it (common: equal lengths in a bucket).
        cache, last_hidden, offsets = jax.lax.cond(
            jnp.any(active),
            lambda c, h, o, a=active, s=size: advance(a, s, c, h, o, take(s, o)),
            lambda c, h, o: (c, h, o),
            cache, last_hidden, offsets)
    return model.head(last_hidden), cache


def _check_prompts(prompt_ids: jax.Array, prompt_lengths) -> None:
    if prompt_ids.ndim != 2 or not jnp.issubdtype(prompt_ids.dtype, jnp.integer):
        raise ValueError(f"prompt_ids has shape {tuple(prompt_ids.shape)} and dtype {prompt_ids.dtype}, "
                         "expected integer ids of shape (batch, width)")
    if prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids has shape {tuple(prompt_ids.shape)}: every prompt needs at least one token")
    if prompt_lengths is None:
        return
    shape = jnp.shape(prompt_lengths)
    if shape != prompt_ids.shape[:1]:
        raise ValueError(f"prompt_lengths has shape {shape}, expected ({prompt_ids.shape[0]},) "
                         f"for prompt_ids of shape {tuple(prompt_ids.shape)}")
    if not isinstance(prompt_lengths, jax.core.Tracer):
        lengths = np.asarray(prompt_lengths)
        if lengths.min() < 1 or lengths.max() > prompt_ids.shape[1]:
            raise ValueError(f"prompt_lengths are {lengths.tolist()}, expected each in "
                             f"[1, {prompt_ids.shape[1]}] (the width of prompt_ids)")


def _check_chunk_size(chunk_size: int) -> None:
    if not (isinstance(chunk_size, int) and chunk_size >= 1 and chunk_size & (chunk_size - 1) == 0):
        raise ValueError(f"chunk_size is {chunk_size!r}, expected a power of two")


def _check_model(model: MambaLM) -> None:
    if not isinstance(model, MambaLM):
        raise ValueError(f"model is a {type(model).__name__}, expected ssmjax.models.MambaLM")


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk_size"))
def _prefill_jit(graphdef, state, prompt_ids, prompt_lengths, chunk_size, cache):
    return _prefill_impl(nnx.merge(graphdef, state), prompt_ids, prompt_lengths, chunk_size, cache)


DEFAULT_CHUNK_SIZE = 2048


# --------------------------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------------------------

def resolve_decode_backend(backend: str) -> str:
    """``"auto"`` → the decode step measured fastest on the default platform."""
    if backend not in DECODE_BACKENDS:
        raise ValueError(f"decode_backend is {backend!r}, expected one of {DECODE_BACKENDS}")
    if backend != "auto":
        return backend
    from ssmjax.generate.fused_step import fused_step_pays_on

    return "pallas" if fused_step_pays_on(jax.default_backend()) else "xla"


def _step_fn(backend: str):
    if backend == "pallas":
        from ssmjax.generate.fused_step import model_step

        return model_step
    return lambda model, token, cache: model.step(token, cache)


def _decode_impl(model: MambaLM, cache: ModelCache, logits: jax.Array, key: jax.Array,
                 eos_ids: jax.Array, pad_token_id: jax.Array, *, max_new_tokens: int,
                 sampling: SamplingConfig, return_logits: bool, backend: str) -> GenerationOutput:
    batch, vocab = logits.shape
    step = _step_fn(backend)
    row_ids = jnp.arange(batch)

    def keep_going(carry):
        t, _, _, _, done, _, _ = carry
        return (t < max_new_tokens) & ~jnp.all(done)

    def one_token(carry):
        t, logits, cache, tokens, done, count, seen_logits = carry
        token = sample_logits(logits, jax.random.fold_in(key, t), sampling, row_ids)
        token = jnp.where(done, pad_token_id, token)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, t))
        if return_logits:
            row = jnp.where(done[:, None], 0.0, logits)[:, None]
            seen_logits = jax.lax.dynamic_update_slice(seen_logits, row, (0, t, 0))
        count = count + (~done).astype(jnp.int32)
        done = done | jnp.isin(token, eos_ids)
        logits, cache = step(model, token, cache)
        return t + 1, logits, cache, tokens, done, count, seen_logits

    tokens = jnp.full((batch, max_new_tokens), pad_token_id, jnp.int32)
    seen = jnp.zeros((batch, max_new_tokens, vocab) if return_logits else (0,), jnp.float32)
    init = (jnp.int32(0), logits.astype(jnp.float32), cache, tokens, jnp.zeros((batch,), bool),
            jnp.zeros((batch,), jnp.int32), seen)
    steps, _, _, tokens, _, count, seen = jax.lax.while_loop(keep_going, one_token, init)
    return GenerationOutput(tokens, count, steps, seen if return_logits else None)


_DECODE_STATIC = ("graphdef", "max_new_tokens", "sampling", "return_logits", "backend")


@functools.partial(jax.jit, static_argnames=_DECODE_STATIC)
def _decode_jit(graphdef, state, cache, logits, key, eos_ids, pad_token_id, **static):
    return _decode_impl(nnx.merge(graphdef, state), cache, logits, key, eos_ids, pad_token_id, **static)


def _eos_array(eos_token_id) -> jax.Array:
    """EOS ids as a run-time array (changing them recompiles nothing); ``-1`` matches none."""
    if eos_token_id is None:
        return jnp.full((1,), -1, jnp.int32)
    ids = (eos_token_id,) if isinstance(eos_token_id, (int, np.integer)) else tuple(eos_token_id)
    if not ids or not all(isinstance(i, (int, np.integer)) and i >= 0 for i in ids):
        raise ValueError(f"eos_token_id is {eos_token_id!r}, expected None, a token id or a "
                         "non-empty sequence of ids")
    return jnp.asarray(ids, jnp.int32)


def _decode_static(max_new_tokens: int, sampling: SamplingConfig, pad_token_id: int,
                   return_logits: bool, backend: str) -> dict:
    """Checks the decode settings; returns the static ones (those that shape the program)."""
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens is {max_new_tokens!r}, expected a positive integer")
    if not isinstance(sampling, SamplingConfig):
        raise ValueError(f"sampling is a {type(sampling).__name__}, expected a SamplingConfig")
    if not (isinstance(pad_token_id, (int, np.integer)) and pad_token_id >= 0):
        raise ValueError(f"pad_token_id is {pad_token_id!r}, expected a token id >= 0")
    return dict(max_new_tokens=max_new_tokens, sampling=sampling, return_logits=bool(return_logits),
                backend=resolve_decode_backend(backend))


def _check_key(key: jax.Array) -> None:
    if not isinstance(key, jax.Array) or not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                              or key.shape == (2,)):
        raise ValueError(f"key has shape {jnp.shape(key)}, expected a PRNG key "
                         "(jax.random.key(seed) or jax.random.PRNGKey(seed))")


class Decoder:
    """Prefill, decode and generate for one :class:`~ssmjax.models.MambaLM`.

    The model is split into its graph and its arrays once, here: walking a deep model's
    modules costs tens of milliseconds, as much as decoding dozens of tokens, so a server
    or a benchmark keeps one ``Decoder`` and calls it many times. Build a new one after
    changing the model's parameters. The module-level :func:`prefill`, :func:`decode` and
    :func:`generate` build one per call.
    """

    def __init__(self, model: MambaLM):
        _check_model(model)
        self.config = model.config
        self._graphdef, self._state = nnx.split(model)

    def prefill(self, prompt_ids: jax.Array, prompt_lengths: jax.Array | None = None, *,
                chunk_size: int = DEFAULT_CHUNK_SIZE,
                cache: ModelCache | None = None) -> tuple[jax.Array, ModelCache]:
        """Runs prompts through the parallel scan; returns the last logits and the caches.

        Args:
            prompt_ids: ``(batch, width)`` int, prompts left-aligned; what follows a
                prompt's length is never read (any id).
            prompt_lengths: ``(batch,)`` int in ``[1, width]``; ``None`` means every prompt
                fills the width.
            chunk_size: the longest piece run at once (a power of two): bounds prefill memory.
            cache: per-layer caches to continue from (a conversation's next turn, or a long
                prompt fed in several calls); default: the zero state.

        Returns:
            ``(logits, cache)``: ``logits (batch, vocab_size)`` float32 of each prompt's last
            token, and per layer its recurrent cache after that token.
        """
        prompt_ids = jnp.asarray(prompt_ids)
        _check_prompts(prompt_ids, prompt_lengths)
        _check_chunk_size(chunk_size)
        if cache is not None:
            cache_batch = cache_batch_size(cache) if cache else None
            if len(cache) != self.config.n_layer or cache_batch != prompt_ids.shape[0]:
                raise ValueError(f"cache has {len(cache)} layers of batch {cache_batch}, expected "
                                 f"{self.config.n_layer} layers of batch {prompt_ids.shape[0]}")
        lengths = None if prompt_lengths is None else jnp.asarray(prompt_lengths, jnp.int32)
        return _prefill_jit(self._graphdef, self._state, prompt_ids, lengths, chunk_size, cache)

    def decode(self, cache: ModelCache, logits: jax.Array, key: jax.Array, *, max_new_tokens: int,
               sampling: SamplingConfig = SamplingConfig(),
               eos_token_id: int | Sequence[int] | None = None, pad_token_id: int = 0,
               return_logits: bool = False, backend: str = "auto") -> GenerationOutput:
        """Generates from a prefilled state in one jit-compiled ``lax.while_loop``.

        Args:
            cache: per-layer caches of ``batch`` sequences (from :meth:`prefill`).
            logits: ``(batch, vocab_size)`` logits of each sequence's last token.
            key: PRNG key; step ``t`` of row ``i`` draws with ``fold_in(fold_in(key, t), i)``.
            max_new_tokens: the most tokens generated per row (the output's width).
            sampling: greedy, temperature, top-k and top-p settings.
            eos_token_id: a row stops after emitting one of these ids; ``None``: never.
            pad_token_id: written after a row's EOS.
            return_logits: also return the logits each token was drawn from.
            backend: the decode step, ``"xla"`` (``MambaLM.step``), ``"pallas"`` (the fused
                SSM update of :mod:`ssmjax.generate.fused_step`) or ``"auto"``.

        Returns:
            A :class:`GenerationOutput`.
        """
        if logits.ndim != 2 or logits.shape[1] != self.config.vocab_size:
            raise ValueError(f"logits has shape {tuple(logits.shape)}, expected (batch, {self.config.vocab_size})")
        _check_key(key)
        static = _decode_static(max_new_tokens, sampling, pad_token_id, return_logits, backend)
        return _decode_jit(self._graphdef, self._state, cache, logits, key, _eos_array(eos_token_id),
                           jnp.int32(pad_token_id), **static)

    def generate(self, prompt_ids: jax.Array, key: jax.Array, *, prompt_lengths: jax.Array | None = None,
                 max_new_tokens: int, sampling: SamplingConfig = SamplingConfig(),
                 eos_token_id: int | Sequence[int] | None = None, pad_token_id: int = 0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, return_logits: bool = False,
                 decode_backend: str = "auto") -> GenerationOutput:
        """:meth:`prefill` then :meth:`decode` (two compiled functions, shared with those).

        Args:
            prompt_ids: ``(batch, width)`` int, prompts left-aligned (see :func:`pad_prompts`).
            key: PRNG key (see :meth:`decode`).
            prompt_lengths: ``(batch,)`` int in ``[1, width]``; ``None``: every prompt fills
                the width.
            max_new_tokens, sampling, eos_token_id, pad_token_id, return_logits: see :meth:`decode`.
            chunk_size: see :meth:`prefill`.
            decode_backend: see ``backend`` of :meth:`decode`.

        Returns:
            A :class:`GenerationOutput` of the new tokens only.
        """
        _check_key(key)
        # Check the decode settings before spending a prefill on them.
        _decode_static(max_new_tokens, sampling, pad_token_id, return_logits, decode_backend)
        _eos_array(eos_token_id)
        logits, cache = self.prefill(prompt_ids, prompt_lengths, chunk_size=chunk_size)
        return self.decode(cache, logits, key, max_new_tokens=max_new_tokens, sampling=sampling,
                           eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                           return_logits=return_logits, backend=decode_backend)


def prefill(model: MambaLM, prompt_ids: jax.Array, prompt_lengths: jax.Array | None = None,
            **options) -> tuple[jax.Array, ModelCache]:
    """:meth:`Decoder.prefill` of ``model``: ``prompt_ids (batch, width)`` → ``(logits (batch,
    vocab_size), per-layer caches)``."""
    return Decoder(model).prefill(prompt_ids, prompt_lengths, **options)


def decode(model: MambaLM, cache: ModelCache, logits: jax.Array, key: jax.Array,
           **options) -> GenerationOutput:
    """:meth:`Decoder.decode` of ``model``: caches and last logits ``(batch, vocab_size)`` →
    :class:`GenerationOutput`."""
    return Decoder(model).decode(cache, logits, key, **options)


def generate(model: MambaLM, prompt_ids: jax.Array, key: jax.Array, **options) -> GenerationOutput:
    """:meth:`Decoder.generate` of ``model``: ``prompt_ids (batch, width)`` →
    :class:`GenerationOutput` of ``(batch, max_new_tokens)`` tokens."""
    return Decoder(model).generate(prompt_ids, key, **options)


def pad_prompts(prompts: Sequence[Sequence[int]], *, pad_token_id: int = 0,
                width_multiple: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Left-aligns token lists into ``(ids (batch, width) int32, lengths (batch,) int32)``.

    ``width`` is the longest prompt rounded up to ``width_multiple``, so that prompts of
    similar lengths share one compiled function.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError(f"prompts has lengths {[len(p) for p in prompts]}, expected at least one "
                         "prompt and at least one token in each")
    if width_multiple < 1:
        raise ValueError(f"width_multiple is {width_multiple}, expected a positive integer")
    lengths = np.array([len(p) for p in prompts], np.int32)
    width = -(-int(lengths.max()) // width_multiple) * width_multiple
    ids = np.full((len(prompts), width), pad_token_id, np.int32)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = prompt
    return ids, lengths
