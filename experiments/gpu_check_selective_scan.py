"""Check the fused selective-scan kernels on the GPU (real Triton lowering, not interpret mode).

For each case, y, the final state and the gradient of every input are compared with a
float64 reference evaluated on the CPU (:func:`ssmjax.ops.reference.selective_scan_reference`
as a ``jax.lax.scan`` under ``jax.enable_x64``), by
norm-wise relative error ``||out - ref|| / ||ref||``. Fresh random inputs per case; each
kernel is also run twice on the same inputs to catch run-to-run differences (races). Cases
with ``resets`` start packed segments at random steps (the first and the last step included);
``cotangent="final_state"`` differentiates a loss on the final state alone (dy = 0).

    python experiments/gpu_check_selective_scan.py            # on the GPU
    python experiments/gpu_check_selective_scan.py --interpret --small  # any CPU

Exits non-zero if any error is over its tolerance (float32 1e-5, float16 5e-3, bfloat16 2e-2).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssmjax.kernels.selective_scan_gpu import selective_scan
from ssmjax.ops.reference import selective_scan_reference

TOLERANCE = {"float32": 1e-5, "float16": 5e-3, "bfloat16": 2e-2}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def rel_err(actual, expected) -> float:
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def make_inputs(rng, batch, length, d, n, groups, dtype, optional, softplus):
    low = ("u", "delta", "B", "C", "z")
    arrays = dict(
        u=rng.standard_normal((batch, length, d)),
        # Pre-softplus values span Mamba's dt range; without softplus, delta is a step size.
        delta=(rng.uniform(-4.0, 0.5, (batch, length, d)) if softplus
               else rng.uniform(0.001, 0.3, (batch, length, d))),
        A=-np.exp(rng.uniform(-1.0, 2.5, (d, n))),
        B=rng.standard_normal((batch, length, groups, n)),
        C=rng.standard_normal((batch, length, groups, n)),
        D=rng.standard_normal(d),
        z=rng.standard_normal((batch, length, d)),
        delta_bias=rng.uniform(-1.0, 1.0, d),
        initial_state=rng.standard_normal((batch, d, n)),
    )
    return {k: (jnp.asarray(v, dtype if k in low else jnp.float32) if k in optional or
                k in ("u", "delta", "A", "B", "C") else None)
            for k, v in arrays.items()}


def loss(fn, wy, wh, names, *xs):
    y, h = fn(**dict(zip(names, xs)))
    return jnp.sum(y.astype(wy.dtype) * wy) + jnp.sum(h.astype(wh.dtype) * wh)


def random_resets(rng, batch, length, rate):
    """``(b, l)`` bool: segment starts at ``rate``, plus row 0's first step (dropping its
    initial state) and the last row's last step."""
    reset = rng.random((batch, length)) < rate
    reset[0, 0] = reset[-1, -1] = True
    return reset


def run_case(case, rng, interpret, block_sizes):
    batch, length, d, n, groups, dtype, optional, softplus = (
        case["batch"], case["length"], case["d"], case["n"], case["groups"], case["dtype"],
        case["optional"], case["softplus"])
    args = make_inputs(rng, batch, length, d, n, groups, jnp.dtype(dtype), optional, softplus)
    names = [k for k in NAMES if args[k] is not None]
    xs = [args[k] for k in names]
    wy = jnp.asarray(rng.standard_normal((batch, length, d)), jnp.float32)
    if case.get("cotangent", "both") == "final_state":
        wy = jnp.zeros_like(wy)
    wh = jnp.asarray(rng.standard_normal((batch, d, n)), jnp.float32)
    reset = (random_resets(rng, batch, length, case["resets"]) if case.get("resets")
             else None)
    kernel = functools.partial(selective_scan, delta_softplus=softplus, interpret=interpret,
                               reset=None if reset is None else jnp.asarray(reset),
                               **block_sizes, **{k: None for k in NAMES if args[k] is None})
    forward = jax.jit(lambda *xs: kernel(**dict(zip(names, xs))))
    gradients = jax.jit(jax.grad(functools.partial(loss, kernel, wy, wh, names),
                                 argnums=tuple(range(len(xs)))))
    y, h = forward(*xs)
    grads = gradients(*xs)
    y2, h2 = forward(*xs)
    grads2 = gradients(*xs)
    repeatable = bool(np.array_equal(np.asarray(y, np.float32), np.asarray(y2, np.float32)) and
                      np.array_equal(h, h2) and
                      all(np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
                          for a, b in zip(grads, grads2)))

    cpu = jax.devices("cpu")[0]
    with jax.enable_x64(True), jax.default_device(cpu):
        x64 = [jnp.asarray(np.asarray(x, np.float64)) for x in xs]
        ref = functools.partial(selective_scan_reference, delta_softplus=softplus, xp=jnp,
                                reset=None if reset is None else jnp.asarray(reset),
                                **{k: None for k in NAMES if args[k] is None})
        y_ref, h_ref = jax.jit(lambda *xs: ref(**dict(zip(names, xs))))(*x64)
        ref_grads = jax.jit(jax.grad(
            functools.partial(loss, ref, jnp.asarray(np.asarray(wy), np.float64),
                              jnp.asarray(np.asarray(wh), np.float64), names),
            argnums=tuple(range(len(xs)))))(*x64)
    errors = {"y": rel_err(y, y_ref), "final_state": rel_err(h, h_ref)}
    for name, g, g_ref, x in zip(names, grads, ref_grads, xs):
        assert g.shape == x.shape and g.dtype == x.dtype, (name, g.shape, g.dtype)
        errors["d" + name] = rel_err(g, g_ref)
    return errors, repeatable


def cases(small: bool):
    """Each case compiles three kernels (~10-30 s on one CPU core), so the list is short and
    each case covers several features at once."""
    every = ("D", "z", "delta_bias", "initial_state")
    base = dict(batch=2, d=64 if small else 256, n=16, groups=1, optional=every, softplus=True)
    long = 37 if small else 2048
    return [
        dict(base, length=long, dtype="float32"),
        dict(base, length=long, dtype="bfloat16", groups=2),
        dict(base, length=301, dtype="float16"),
        dict(base, length=1, dtype="float32"),
        dict(base, length=37, dtype="float32", groups=4),
        dict(base, length=37, dtype="bfloat16", optional=(), softplus=False),
        dict(base, length=100, dtype="float32", optional=("z",)),
        dict(base, length=100, dtype="float32", n=5),
        dict(base, length=64, dtype="float32", n=64),
        dict(base, length=long, dtype="float32", resets=0.05),
        dict(base, length=301, dtype="bfloat16", groups=2, resets=0.3),
        dict(base, length=37, dtype="float32", resets=0.5, cotangent="final_state"),
        dict(base, length=100, dtype="float32", cotangent="final_state"),
    ] + ([] if small else [dict(base, length=64, dtype="float32", n=256, d=64)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interpret", action="store_true", help="Pallas interpret mode")
    parser.add_argument("--small", action="store_true", help="small shapes (for interpret)")
    parser.add_argument("--shard", default="0/1",
                        help="k/N: run cases k, k+N, ... (to compile in parallel processes)")
    parser.add_argument("--block-sizes", default="",
                        help="comma-separated key=value overrides, e.g. block_d=16,chunk=8")
    args = parser.parse_args(argv)
    block_sizes = {k: int(v) for k, v in
                   (kv.split("=") for kv in args.block_sizes.split(",") if kv)}
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
          f"device {jax.devices()[0].device_kind}, interpret={args.interpret}, "
          f"block sizes {block_sizes or 'tuned defaults'}")
    rng = np.random.default_rng(2026)
    worst: dict[str, float] = {}
    failures = 0
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    for case in cases(args.small)[shard::n_shards]:
        start = time.perf_counter()
        errors, repeatable = run_case(case, rng, args.interpret, block_sizes)
        tol = TOLERANCE[case["dtype"]]
        bad = [k for k, e in errors.items() if not e < tol]
        failures += len(bad) + (not repeatable)
        label = (f"{case['dtype']:>8} L={case['length']:<5} d={case['d']} n={case['n']} "
                 f"g={case['groups']} opt={'+'.join(case['optional']) or '-'} "
                 f"softplus={int(case['softplus'])} resets={case.get('resets', 0)} "
                 f"cotangent={case.get('cotangent', 'both')}")
        print(f"{label}: max {max(errors.values()):.2e} "
              f"({max(errors, key=errors.get)}), repeatable={repeatable}"
              f"{'  FAIL ' + str(bad) if bad else ''}  [{time.perf_counter() - start:.1f}s]",
              flush=True)
        key_dtype = case["dtype"]
        for name, e in errors.items():
            key = f"{key_dtype} {name}"
            worst[key] = max(worst.get(key, 0.0), e)
    print("\nmax relative error over all cases, by dtype and output:")
    for dtype in TOLERANCE:
        row = {k.split(" ", 1)[1]: v for k, v in worst.items() if k.startswith(dtype + " ")}
        print(f"  {dtype:>8} (tol {TOLERANCE[dtype]:.0e}): " +
              "  ".join(f"{k}={v:.1e}" for k, v in row.items()))
    print("RESULT:", "PASS" if failures == 0 else f"FAIL ({failures})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
