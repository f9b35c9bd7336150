"""Forward+backward time and compiled memory of the LTI layers (S4, S4D, S5, Liquid-S4) on CPU.

For each layer and length L: one jitted step computing the loss ``mean(layer(x)²)`` and its
gradients with respect to all parameters and the input; the time is the median of
``--repeats`` runs after a warm-up run, the memory is the temporary bytes of XLA's buffer
assignment of the compiled step (``memory_analysis().temp_size_in_bytes``). The Mamba mixer
of the same width runs as the peer, and each row shows its time relative to Mamba's at the
same L.

    python experiments/benchmarks/lti_layers.py [--batch 2 --width 32 --state 64 \\
        --lengths 1024 4096 16384 --repeats 3]

Prints a markdown table last and writes ``experiments/results/lti_layers_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from ssmjax.nn import MambaMixer
from ssmjax.nn.s4 import S4, LiquidS4
from ssmjax.nn.s4d import S4D
from ssmjax.nn.s5 import S5

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
MIB = 2**20
PEER = "Mamba"


def make_layer(name: str, width: int, state: int, length: int) -> nnx.Module:
    """The layer called ``name`` at width ``width``; S4-family kernels sized for ``length``."""
    rngs = nnx.Rngs(0)
    layers = {
        "S4": lambda: S4(width, l_max=length, d_state=state, rngs=rngs),
        "S4D": lambda: S4D(width, d_state=state, rngs=rngs),
        "S5": lambda: S5(width, d_state=state, rngs=rngs),
        "LiquidS4-pb2": lambda: LiquidS4(width, l_max=length, d_state=state, liquid_order=2,
                                         liquid_kernel="pb", rngs=rngs),
        "LiquidS4-kb2": lambda: LiquidS4(width, l_max=length, d_state=state, liquid_order=2,
                                         liquid_kernel="kb", rngs=rngs),
        PEER: lambda: MambaMixer(width, d_state=16, rngs=rngs),
    }
    return layers[name]()


def forward_backward(graphdef):
    """``(state, x) → (loss, (d loss/d state, d loss/d x))`` for the layer of ``graphdef``."""

    def loss(state, x):
        return jnp.mean(nnx.merge(graphdef, state)(x)[0].astype(jnp.float32) ** 2)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def measure(name: str, batch: int, width: int, state: int, length: int, repeats: int) -> dict:
    layer = make_layer(name, width, state, length)
    graphdef, variables = nnx.split(layer)
    x = jax.random.normal(jax.random.key(1), (batch, length, width), jnp.float32)
    start = time.perf_counter()
    compiled = forward_backward(graphdef).lower(variables, x).compile()
    compile_s = time.perf_counter() - start
    temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    loss, grads = jax.block_until_ready(compiled(variables, x))  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(variables, x))
        seconds.append(time.perf_counter() - start)
    finite = bool(jnp.isfinite(loss)) and all(bool(jnp.isfinite(g).all())
                                               for g in jax.tree.leaves(grads))
    params = sum(p.size for p in jax.tree.leaves(nnx.state(layer, nnx.Param)))
    return dict(layer=name, length=length, params=params, fwd_bwd_ms=1e3 * statistics.median(seconds),
                fwd_bwd_ms_all=[1e3 * s for s in seconds], compile_s=compile_s,
                temp_mib=temp_bytes / MIB, finite=finite)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=32, help="d_model")
    parser.add_argument("--state", type=int, default=64, help="N of S4/S4D/Liquid-S4, P of S5")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", nargs="+",
                        default=["S4", "S4D", "S5", "LiquidS4-pb2", "LiquidS4-kb2", PEER])
    args = parser.parse_args()

    load_before = os.getloadavg()
    rows = []
    for length in args.lengths:
        for name in args.layers:
            row = measure(name, args.batch, args.width, args.state, length, args.repeats)
            rows.append(row)
            print(f"{name:>13} L={length:>6}: {row['fwd_bwd_ms']:9.1f} ms, "
                  f"temp {row['temp_mib']:8.1f} MiB, compile {row['compile_s']:.1f} s", flush=True)
    peer_ms = {r["length"]: r["fwd_bwd_ms"] for r in rows if r["layer"] == PEER}
    for row in rows:
        peer = peer_ms.get(row["length"])
        row["time_vs_mamba"] = None if peer is None else row["fwd_bwd_ms"] / peer

    config = dict(batch=args.batch, width=args.width, state=args.state, repeats=args.repeats,
                  mamba_d_state=16, mamba_expand=2)
    result = dict(config=config,
                  platform=jax.devices()[0].device_kind, jax=jax.__version__, cpu_count=os.cpu_count(),
                  machine=platform.machine(), load_average_before=load_before,
                  load_average_after=os.getloadavg(), rows=rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "lti_layers_cpu.json"
    out.write_text(json.dumps(result, indent=1) + "\n")

    print(f"\nLTI layers, forward+backward of mean(y²) w.r.t. params and input, CPU; "
          f"batch={args.batch}, d_model={args.width}, N (P for S5)={args.state}; median of "
          f"{args.repeats} runs; load average {load_before[0]:.1f} → "
          f"{result['load_average_after'][0]:.1f} on {os.cpu_count()} cores")
    header = ("layer", "L", "params", "fwd+bwd ms", "temp MiB", f"time vs {PEER}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        ratio = "—" if row["time_vs_mamba"] is None else f"{row['time_vs_mamba']:.2f}×"
        print(f"| {row['layer']} | {row['length']} | {row['params']} | {row['fwd_bwd_ms']:.1f} | "
              f"{row['temp_mib']:.1f} | {ratio} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
