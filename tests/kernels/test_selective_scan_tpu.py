"""The Pallas TPU selective-scan kernels: TPU interpret mode against float64 references, and
lowering for TPU on this CPU.

Numerics run in ``pltpu.InterpretParams`` interpret mode (``interpret=True``), which
simulates VMEM, the block pipeline and out-of-bounds reads of partial blocks (as NaN, so
unmasked garbage fails the checks). References: :func:`ssmjax.ops.reference.
selective_scan_reference`'s NumPy loop for values and its ``lax.scan`` form differentiated in
float64 for gradients; with resets, the reference is run on every segment separately, from
zero state except the first segment of a row (which starts from ``initial_state``).

The lowering tests export the jitted kernels for ``platforms=("tpu",)``: that runs Pallas'
Mosaic lowering (block-shape rules, supported primitives) and fails on what only interpret
mode accepts. Mosaic's own compilation happens in libtpu, which
``experiments/tpu_check_selective_scan.py`` drives without a TPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TOLERANCE, relative_error
from ssmjax.kernels.selective_scan_tpu import selective_scan, vmem_bytes
from ssmjax.ops import selective_scan as op_selective_scan
from ssmjax.ops.reference import selective_scan_reference

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
# Small time blocks give several grid steps along the sequence (state carried in VMEM
# scratch, checkpoints, a masked partial block) at test lengths.
FAST = dict(block_l=8, unroll=4, interpret=True)


def make_inputs(seed, *, batch=2, length=13, d=8, n=4, groups=1, dtype=jnp.float32,
                with_d=True, with_z=True, with_bias=True, with_state=True, softplus=True):
    rng = np.random.default_rng(seed)
    args = dict(
        u=rng.standard_normal((batch, length, d)),
        delta=(rng.uniform(-4.0, 0.5, (batch, length, d)) if softplus
               else rng.uniform(0.001, 0.3, (batch, length, d))),
        A=-np.exp(rng.uniform(-1.0, 1.5, (d, n))),
        B=rng.standard_normal((batch, length, groups, n)),
        C=rng.standard_normal((batch, length, groups, n)),
        D=rng.standard_normal(d) if with_d else None,
        z=rng.standard_normal((batch, length, d)) if with_z else None,
        delta_bias=rng.uniform(-0.5, 0.5, d) if with_bias else None,
        initial_state=rng.standard_normal((batch, d, n)) if with_state else None,
    )
    low = ("u", "delta", "B", "C", "z")
    return {k: None if v is None else jnp.asarray(v, dtype if k in low else jnp.float32)
            for k, v in args.items()}


def segmented_reference(args, reset, softplus, xp=np):
    """The reference run segment by segment: what a scan with ``reset`` must equal."""
    batch, length = args["u"].shape[:2]
    per_row = ("u", "delta", "B", "C", "z")
    ys, states = [], []
    for row in range(batch):
        starts = [0] + [t for t in range(1, length) if reset[row, t]] + [length]
        first_state = None
        if args["initial_state"] is not None and not reset[row, 0]:
            first_state = args["initial_state"][row:row + 1]
        pieces = []
        for begin, end in zip(starts[:-1], starts[1:]):
            sliced = {k: (None if args[k] is None else args[k][row:row + 1, begin:end])
                      for k in per_row}
            y, state = selective_scan_reference(
                sliced["u"], sliced["delta"], args["A"], sliced["B"], sliced["C"], args["D"],
                sliced["z"], delta_bias=args["delta_bias"], delta_softplus=softplus,
                initial_state=first_state if begin == 0 else None, xp=xp)
            pieces.append(y)
        ys.append(xp.concatenate(pieces, axis=1))
        states.append(state)
    return xp.concatenate(ys, axis=0), xp.concatenate(states, axis=0)


def outputs_and_gradients(fn, args, cotangents):
    """y, final state and the vjp for every present input, as one compiled program."""
    present = [k for k in NAMES if args[k] is not None]
    absent = {k: None for k in NAMES if args[k] is None}

    def run(xs, cotangents):
        outputs, vjp = jax.vjp(lambda *xs: fn(**dict(zip(present, xs)), **absent), *xs)
        return outputs, dict(zip(present, vjp(cotangents)))

    return jax.jit(run)([args[k] for k in present], cotangents)


def check(args, softplus, *, seed, reset=None, only_final_state_cotangent=False,
          test_inference_path=False, **options):
    """Kernel vs the float64 references: y, final state and every gradient."""
    tol = TOLERANCE[args["u"].dtype.type]
    batch, length, d = args["u"].shape
    rng = np.random.default_rng(seed + 1000)
    dy = rng.standard_normal((batch, length, d))
    if only_final_state_cotangent:
        dy = np.zeros_like(dy)
    dh = rng.standard_normal((batch,) + args["A"].shape)
    kernel = functools.partial(selective_scan, delta_softplus=softplus,
                               reset=None if reset is None else jnp.asarray(reset),
                               **{**FAST, **options})
    (y, h), grads = outputs_and_gradients(
        kernel, args, (jnp.asarray(dy, args["u"].dtype), jnp.asarray(dh, jnp.float32)))

    no_reset = np.zeros((batch, length), bool) if reset is None else reset
    y_ref, h_ref = segmented_reference(args, no_reset, softplus)
    assert y.dtype == args["u"].dtype and y.shape == args["u"].shape
    assert h.dtype == jnp.float32 and h.shape == h_ref.shape
    assert relative_error(y, y_ref) < tol, relative_error(y, y_ref)
    assert relative_error(h, h_ref) < tol, relative_error(h, h_ref)
    if test_inference_path:  # the forward without checkpoints (no vjp around it)
        y_inf, h_inf = jax.jit(kernel)(**args)
        assert relative_error(y_inf, y_ref) < tol and relative_error(h_inf, h_ref) < tol

    with jax.enable_x64(True):
        args64 = {k: None if v is None else jnp.asarray(np.asarray(v, np.float64))
                  for k, v in args.items()}
        reference = lambda **xs: segmented_reference(xs, no_reset, softplus, xp=jnp)  # noqa: E731
        _, ref_grads = outputs_and_gradients(reference, args64,
                                             (jnp.asarray(dy), jnp.asarray(dh)))
        ref_grads = {k: np.asarray(v) for k, v in ref_grads.items()}
    for name, g in grads.items():
        assert g.dtype == args[name].dtype and g.shape == args[name].shape, (name, g.dtype)
        err = relative_error(g, ref_grads[name])
        assert err < tol, f"d{name}: relative error {err:.2e} (tolerance {tol:.0e})"


# ---------------------------------------------------------------------------------------------
# Numerics in TPU interpret mode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length,groups", [(1, 1), (37, 2)])
def test_fp32_lengths_and_groups(length, groups):
    # 37 = four time blocks and a masked partial one, with two groups of 4 channels, each
    # padded to a 128-lane tile.
    args = make_inputs(length, length=length, d=8, groups=groups)
    check(args, True, seed=length, test_inference_path=length == 37)


@pytest.mark.parametrize(
    "options",
    [
        dict(with_d=False, with_z=False, with_bias=False, with_state=False, softplus=False),
        dict(with_d=False, with_z=True, with_bias=False, with_state=True, softplus=False),
    ],
    ids=["bare", "z+state"],
)
def test_fp32_optional_inputs(options):
    args = make_inputs(3, length=11, **options)
    check(args, options["softplus"], seed=3)


def test_final_state_cotangent_alone_reaches_every_input():
    args = make_inputs(4, length=19, groups=2)
    check(args, True, seed=4, only_final_state_cotangent=True)


def test_several_channel_tiles_of_one_group():
    # 256 channels in two 128-channel tiles of one group: dB and dC add the tiles' partial
    # sums. 16 steps = two full time blocks, no masking.
    args = make_inputs(6, batch=1, length=16, d=256, n=3)
    check(args, True, seed=6, block_d=128)


def test_bf16_inputs():
    args = make_inputs(7, length=37, groups=2, dtype=jnp.bfloat16)
    check(args, True, seed=7, block_l=16)


def resets_at(length, *rows):
    """(len(rows), length) bool, True at the listed positions of each row."""
    return np.stack([np.isin(np.arange(length), row) for row in rows])


RESETS = {
    # Every position starts a segment: segments of length 1, the initial state dropped.
    "every-position": np.ones((2, 5), bool),
    # Several short segments across time-block boundaries (one of length 1); row 0 also
    # resets at t = 0, which drops its initial state.
    "several-short": resets_at(21, [0, 3, 4, 8, 15, 16], [5, 13]),
    # One long segment after a reset at t = 1 in one row, none in the other; given as 0/1
    # floats rather than bools.
    "one-long": resets_at(30, [1], []).astype(np.float32),
}


@pytest.mark.parametrize("pattern", list(RESETS))
def test_resets_match_the_reference_per_segment(pattern):
    reset = RESETS[pattern]
    args = make_inputs(8, batch=2, length=reset.shape[1], groups=2)
    check(args, True, seed=8, reset=reset)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(block_d=100), r"block_d is 100, expected a positive multiple of 128"),
        (dict(block_l=12), r"block_l is 12, expected a positive multiple of 8"),
        (dict(reset=jnp.zeros((2, 5), bool)), r"reset has shape \(2, 5\), expected \(2, 13\)"),
    ],
    ids=["block_d", "block_l", "reset"],
)
def test_bad_arguments_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        selective_scan(**make_inputs(10), **{**FAST, **options})


def test_bf16_time_block_must_fill_packed_sublanes():
    args = make_inputs(10, dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match=r"block_l is 8, expected a positive multiple of 16"):
        selective_scan(**args, block_l=8, interpret=True)


def test_vmem_budget_counts_tile_padding():
    # Forward, 256 channels × 128 steps, bf16, n = 16. Double-buffered blocks: u, Δ, z, y
    # (64 KiB each); B, C as (128, 16) padded to 128 lanes (32 KiB each); keep (128, 1) f32
    # padded likewise (64 KiB); A, h0, final state, checkpoint (16 KiB each); D, bias padded to
    # 8 sublanes (8 KiB each). Scratch: the state, three f32 row tiles (128 KiB each), B and C
    # f32 rows (64 KiB each), keep (64 KiB); reset or not, the budget is an upper bound.
    blocks = 4 * 64 + 2 * 32 + 64 + 4 * 16 + 2 * 8
    scratch = 16 + 3 * 128 + 2 * 64 + 64
    assert vmem_bytes(256, 128, 16, 2, backward=False) == (2 * blocks + scratch) * 1024
    # States pad to whole sublane tiles: n = 9 costs what n = 16 does.
    assert vmem_bytes(256, 128, 9, 2, backward=True) == vmem_bytes(256, 128, 16, 2, backward=True)


# ---------------------------------------------------------------------------------------------
# Lowering for TPU (Mosaic) on this CPU
# ---------------------------------------------------------------------------------------------


def abstract_inputs(batch, length, d, n, groups, dtype):
    f32 = jnp.float32
    shapes = dict(u=((batch, length, d), dtype), delta=((batch, length, d), dtype),
                  A=((d, n), f32), B=((batch, length, groups, n), dtype),
                  C=((batch, length, groups, n), dtype), D=((d,), f32),
                  z=((batch, length, d), dtype), delta_bias=((d,), f32),
                  initial_state=((batch, d, n), f32))
    return {k: jax.ShapeDtypeStruct(shape, dt) for k, (shape, dt) in shapes.items()}


def export_for_tpu(fn, args) -> str:
    exported = jax.export.export(jax.jit(fn), platforms=("tpu",))(*args)
    return exported.mlir_module()


LOWERING_CASES = [
    # (batch, length, d, n, groups, dtype, block options)
    (2, 2048, 1536, 16, 1, jnp.bfloat16, {}),                    # mamba-130m's scan, defaults
    (2, 300, 512, 16, 2, jnp.bfloat16, dict(block_d=128, block_l=64)),  # masked tail, groups
    (1, 100, 24, 3, 3, jnp.float32, dict(block_l=32)),           # odd n, padded narrow groups
    (1, 7, 8, 4, 1, jnp.float32, {}),                            # one block smaller than a tile
]


@pytest.mark.parametrize("case", LOWERING_CASES,
                         ids=lambda c: "b{}-l{}-d{}-n{}-g{}".format(*c[:5]))
@pytest.mark.parametrize("with_reset", [False, True], ids=["", "reset"])
def test_forward_and_backward_lower_for_tpu(case, with_reset):
    batch, length, d, n, groups, dtype, options = case
    args = abstract_inputs(batch, length, d, n, groups, dtype)
    reset = jax.ShapeDtypeStruct((batch, length), jnp.bool_)

    def forward(args, reset):
        return selective_scan(**args, delta_softplus=True,
                              reset=reset if with_reset else None, **options)

    def forward_and_backward(args, reset):
        def loss(args):
            y, h = forward(args, reset)
            return jnp.sum(y.astype(jnp.float32) ** 2) + jnp.sum(h ** 2)
        return jax.grad(loss)(args)

    module = export_for_tpu(forward, (args, reset))
    assert module.count("tpu_custom_call") == 1 and "selective_scan_tpu_fwd" in module
    module = export_for_tpu(forward_and_backward, (args, reset))
    assert module.count("tpu_custom_call") == 2
    assert "selective_scan_tpu_fwd" in module and "selective_scan_tpu_bwd" in module


@pytest.mark.parametrize("backend", ["auto", "pallas"])
def test_op_dispatches_to_the_tpu_kernel_on_a_tpu(monkeypatch, backend):
    """On a TPU platform ``ssmjax.ops.selective_scan`` lowers to the Mosaic kernel."""
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    args = abstract_inputs(2, 64, 256, 16, 1, jnp.bfloat16)

    def loss(args):
        y = op_selective_scan(**args, delta_softplus=True, backend=backend)
        return jnp.sum(y.astype(jnp.float32) ** 2)

    module = export_for_tpu(jax.grad(loss), (args,))
    assert "selective_scan_tpu_fwd" in module and "selective_scan_tpu_bwd" in module


def test_op_passes_segment_resets_to_the_tpu_kernel(monkeypatch):
    """Packed rows through ``ssmjax.ops.selective_scan`` on a TPU: the op hands the TPU kernel
    the resets of ``segment_ids`` (and lowers to the Mosaic kernel)."""
    from ssmjax.kernels import selective_scan_tpu

    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    kernel, seen = selective_scan_tpu.selective_scan, []

    def recording(*args, reset=None, **kwargs):
        seen.append(reset)
        return kernel(*args, reset=reset, **kwargs)

    monkeypatch.setattr(selective_scan_tpu, "selective_scan", recording)
    args = abstract_inputs(2, 64, 256, 16, 1, jnp.float32)
    segment_ids = jax.ShapeDtypeStruct((2, 64), jnp.int32)

    def loss(args, segment_ids):
        y = op_selective_scan(**args, delta_softplus=True, segment_ids=segment_ids,
                              backend="pallas")
        return jnp.sum(y ** 2)

    module = export_for_tpu(jax.grad(loss), (args, segment_ids))
    assert "selective_scan_tpu_fwd" in module and "selective_scan_tpu_bwd" in module
    assert seen and all(reset is not None and reset.shape == (2, 64) for reset in seen)
