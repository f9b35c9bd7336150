"""Cost of SeRpEnt: forward + backward time of a SeRpEntBlock over Mamba against a plain
Mamba block of the same width, and of the resampling ops alone.

Three timings per length L, each a jitted forward + backward (gradients of a random
projection of the output with respect to every parameter and the input):

* ``mamba_block``: pre-norm residual Mamba block (RMSNorm + MambaMixer(d_model)).
* ``serpent_block``: SeRpEntBlock(d_model) with three branches (a base branch and
  resampled branches at κ = 2 and 4), each a MambaMixer of width d_model / 3, RMS pre-norm.
* ``resampling``: the resampling of the block's two resampled branches alone: Δ (13), times,
  neighbour search, compression (12a) and nearest-copy decompression (15), with the inner
  SSM left out; once with each neighbour-search method.

The overhead of the resampling is ``resampling / serpent_block``.

    python experiments/benchmarks/serpent_cost.py [--lengths 2048 8192 --batch 8 --d-model 768]

Prints a table last and writes ``experiments/results/serpent_cost_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
from flax import nnx

from ssmjax.nn import MambaMixer, ResidualBlock
from ssmjax.nn.serpent import SeRpEntBlock
from ssmjax.ops.resample import compress, decompress, resampling_plan, time_intervals
from ssmjax.ops.selective_scan import default_backend

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def device_tag() -> str:
    """``h100``, ``h200``, ``cpu``…: the accelerator's model, for the results file name."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    found = re.search(r"([A-Z]\d{2,4})", device.device_kind)
    return found.group(1).lower() if found else re.sub(r"\W+", "_", device.device_kind).lower()


def timed(fn, args, repeats: int, warmup: int = 2) -> dict:
    """Compile time, then the median and minimum of ``repeats`` timed calls (milliseconds)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        samples.append((time.perf_counter() - start) * 1e3)
    return dict(median_ms=statistics.median(samples), min_ms=min(samples), compile_s=compile_s,
                repeats=repeats)


def forward_backward(module: nnx.Module, cotangent: jax.Array):
    """``(params, x) → gradients`` of ``⟨module(x), cotangent⟩`` for every parameter and x."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def loss(params, x):
        return jnp.vdot(nnx.merge(graphdef, params, rest)(x)[0].astype(jnp.float32), cotangent)

    return jax.grad(loss, argnums=(0, 1)), params


def resampling_forward_backward(block: SeRpEntBlock, cotangent: jax.Array, method: str):
    """Forward + backward of the block's resampling alone (no inner SSM, no norm)."""
    branches = list(block.resampled)
    params = [dict(delta_weight=b.delta_proj.kernel[...][:, 0], delta_bias=b.delta_proj.bias[...],
                   means=b.compression.means[...], kernel=b.compression.kernel[...],
                   bias=b.compression.bias[...]) for b in branches]

    def loss(params, x):
        outputs = []
        for branch, p in zip(branches, params):
            delta = time_intervals(x, p["delta_weight"], p["delta_bias"], rate=branch.rate)
            plan = resampling_plan(delta, rate=branch.rate, window=branch.window, method=method)
            compressed = compress(x, plan, means=p["means"], width=branch.compression.gamma,
                                  kernel=p["kernel"], bias=p["bias"])
            outputs.append(decompress(compressed, plan))
        out = jnp.concatenate(outputs, axis=-1).astype(jnp.float32)
        return jnp.vdot(out, cotangent[..., :out.shape[-1]])

    return jax.grad(loss, argnums=(0, 1)), params


def measure_length(length: int, args, backend: str) -> dict:
    dtype = DTYPES[args.dtype]
    keys = jax.random.split(jax.random.key(length), 2)
    x = jax.random.normal(keys[0], (args.batch, length, args.d_model), jnp.float32).astype(dtype)
    cotangent = jax.random.normal(keys[1], x.shape, jnp.float32)
    mixer_kwargs = dict(d_state=args.d_state, scan_backend=backend)
    mamba = ResidualBlock(MambaMixer(args.d_model, dtype=dtype, rngs=nnx.Rngs(0), **mixer_kwargs))
    serpent = SeRpEntBlock(args.d_model, compression_rates=tuple(args.rates), window=args.window,
                           num_basis=args.num_basis, ssm="mamba", ssm_kwargs=mixer_kwargs,
                           norm="rms", dtype=dtype, rngs=nnx.Rngs(0))
    row = dict(length=length)
    for name, module in (("mamba_block", mamba), ("serpent_block", serpent)):
        grad_fn, params = forward_backward(module, cotangent)
        row[name] = timed(grad_fn, (params, x), args.repeats)
        print(f"L={length} {name}: {row[name]['median_ms']:.2f} ms", flush=True)
    for method in args.search_methods:
        grad_fn, params = resampling_forward_backward(serpent, cotangent, method)
        row[f"resampling_{method}"] = timed(grad_fn, (params, x), args.repeats)
        print(f"L={length} resampling ({method}): {row[f'resampling_{method}']['median_ms']:.2f} ms",
              flush=True)
    serpent_ms = row["serpent_block"]["median_ms"]
    row["serpent_over_mamba"] = serpent_ms / row["mamba_block"]["median_ms"]
    row["resampling_share_of_serpent"] = {
        method: row[f"resampling_{method}"]["median_ms"] / serpent_ms for method in args.search_methods}
    return row


def check_backend(backend: str, args) -> tuple[str, str | None]:
    """Runs a small Mamba forward + backward with ``backend``; on failure falls back to
    ``"chunked"`` and returns the reason."""
    if backend == "chunked":
        return backend, None
    try:
        mixer = MambaMixer(args.d_model, d_state=args.d_state, scan_backend=backend, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(0), (2, 256, args.d_model))
        grad_fn, params = forward_backward(mixer, jnp.ones_like(x))
        jax.block_until_ready(jax.jit(grad_fn)(params, x))
        return backend, None
    except Exception:  # any failure of the kernel path sends the benchmark to the chunked scan
        reason = traceback.format_exc(limit=3)
        print(f"scan backend {backend!r} failed, using 'chunked':\n{reason}", file=sys.stderr)
        return "chunked", reason.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="default: 2048 8192 on an accelerator, 512 2048 on the CPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 8 (accelerator), 2 (CPU)")
    parser.add_argument("--d-model", type=int, default=None, help="default: 768 (accelerator), 192 (CPU)")
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--rates", type=float, nargs="+", default=[2.0, 4.0])
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--num-basis", type=int, default=16)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--backend", default="auto", help="selective_scan backend of the Mamba mixers")
    parser.add_argument("--search-methods", nargs="+", default=["scan", "sort"])
    parser.add_argument("--repeats", type=int, default=None, help="default: 20 (accelerator), 3 (CPU)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="default: experiments/results/serpent_cost_<device>.json")
    args = parser.parse_args()
    on_cpu = jax.default_backend() == "cpu"
    args.lengths = args.lengths or ([512, 2048] if on_cpu else [2048, 8192])
    args.batch = args.batch or (2 if on_cpu else 8)
    args.d_model = args.d_model or (192 if on_cpu else 768)
    args.repeats = args.repeats or (3 if on_cpu else 20)
    if args.d_model % (len(args.rates) + 1):
        parser.error(f"--d-model {args.d_model} must split evenly into {len(args.rates) + 1} branches")

    requested = default_backend() if args.backend == "auto" else args.backend
    backend, fallback_reason = check_backend(requested, args)
    out = args.out or RESULTS / f"serpent_cost_{device_tag()}.json"
    result = dict(device=jax.devices()[0].device_kind, platform=jax.default_backend(),
                  jax=jax.__version__, scan_backend_requested=requested, scan_backend=backend,
                  scan_backend_fallback_reason=fallback_reason,
                  config=dict(batch=args.batch, d_model=args.d_model, d_state=args.d_state,
                              rates=args.rates, window=args.window, num_basis=args.num_basis,
                              dtype=args.dtype, branches=len(args.rates) + 1),
                  rows=[])
    for length in args.lengths:
        result["rows"].append(measure_length(length, args, backend))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")  # after each length: partial runs keep data

    print(f"\n{result['device']} ({result['platform']}), jax {result['jax']}, scan backend "
          f"{backend!r}, batch {args.batch}, d_model {args.d_model}, {args.dtype}, "
          f"SeRpEnt branches: base + κ={args.rates}, window {args.window}; forward+backward, "
          f"median ms. Written to {out}")
    methods = args.search_methods
    header = (f"{'L':>6} | {'Mamba':>9} | {'SeRpEnt':>9} | {'SeRpEnt/Mamba':>13} | "
              + " | ".join(f"{'resample(' + m + ')':>17} | {'share':>6}" for m in methods))
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        cells = [f"{row['length']:>6}", f"{row['mamba_block']['median_ms']:>9.2f}",
                 f"{row['serpent_block']['median_ms']:>9.2f}", f"{row['serpent_over_mamba']:>13.2f}"]
        for m in methods:
            cells.append(f"{row[f'resampling_{m}']['median_ms']:>17.2f}")
            cells.append(f"{100 * row['resampling_share_of_serpent'][m]:>5.1f}%")
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
