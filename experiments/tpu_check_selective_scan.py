"""Compile the Pallas TPU selective-scan kernels for real TPU chips on a machine without one.

Two tables:

* the VMEM one program of each kernel needs, by block size (``vmem_bytes``: double-buffered
  blocks plus scratch, tile padding included), at d_state 16, bf16 and float32 activations;
* with ``--compile``: the forward and the forward + backward, jitted, compiled for each TPU
  generation through libtpu's deviceless ahead-of-time compiler
  (``jax.experimental.topologies``), so Mosaic's whole pipeline (layout inference, VMEM
  allocation, code generation) runs; OK, or the compiler's first error line.

libtpu is the ``jax[tpu]`` extra; it is not needed otherwise, so install it out of the way::

    pip install --no-deps --target /tmp/libtpu libtpu==0.0.42.1   # the one jax 0.10.2 pins
    PYTHONPATH=/tmp/libtpu TPU_ACCELERATOR_TYPE=v5litepod-4 \\
        python experiments/tpu_check_selective_scan.py --compile

Nothing runs on a TPU: this proves the kernels compile, not that they are fast or correct on
the hardware (correctness is tested in TPU interpret mode:
tests/kernels/test_selective_scan_tpu.py).
Writes experiments/results/tpu_compile_check.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp

from ssmjax.kernels.selective_scan_tpu import default_block_sizes, selective_scan, vmem_bytes

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "tpu_compile_check.json"
TOPOLOGIES = ("v4:2x2x1", "v5e:2x2", "v5p:2x2x1", "v6e:2x2")
BLOCKS = ((128, 128), (256, 128), (256, 256), (512, 128), (512, 256), (1024, 512))
# (batch, length, d, n, groups, dtype, reset, block options)
CASES = (
    (4, 2048, 2048, 16, 1, "bfloat16", False, {}),
    (4, 2048, 2048, 16, 1, "bfloat16", True, {}),
    (2, 300, 1536, 16, 2, "float32", False, {}),
    (1, 100, 24, 3, 3, "bfloat16", True, dict(block_l=32)),
    (4, 2048, 2048, 16, 1, "bfloat16", False, dict(block_d=512, block_l=256)),
    (4, 2048, 2048, 16, 1, "float32", False, dict(block_d=1024, block_l=512)),
)


def vmem_table() -> list[dict]:
    rows = []
    for block_d, block_l in BLOCKS:
        row = dict(block_d=block_d, block_l=block_l)
        for name, itemsize in (("bf16", 2), ("fp32", 4)):
            for kernel in ("fwd", "bwd"):
                row[f"{kernel}_{name}_mib"] = round(
                    vmem_bytes(block_d, block_l, 16, itemsize, backward=kernel == "bwd") / 2**20, 2)
        rows.append(row)
    return rows


def compile_case(device, case) -> dict:
    from jax.sharding import SingleDeviceSharding

    batch, length, d, n, groups, dtype, with_reset, options = case
    act, f32 = jnp.dtype(dtype), jnp.float32
    shapes = [((batch, length, d), act), ((batch, length, d), act), ((d, n), f32),
              ((batch, length, groups, n), act), ((batch, length, groups, n), act), ((d,), f32),
              ((batch, length, d), act), ((d,), f32), ((batch, d, n), f32),
              ((batch, length), jnp.bool_)]
    args = [jax.ShapeDtypeStruct(s, t, sharding=SingleDeviceSharding(device)) for s, t in shapes]

    def forward(*a):
        return selective_scan(*a[:9], delta_softplus=True, reset=a[9] if with_reset else None,
                              **options)

    def forward_and_backward(*a):
        def loss(*x):
            y, h = selective_scan(*x, delta_softplus=True, reset=a[9] if with_reset else None,
                                  **options)
            return jnp.sum(y.astype(f32) ** 2) + jnp.sum(h ** 2)
        return jax.grad(loss, argnums=range(9))(*a[:9])

    result = dict(batch=batch, length=length, d=d, n=n, groups=groups, dtype=dtype,
                  reset=with_reset, **{**default_block_sizes(), **options})
    for name, fn in (("fwd", forward), ("fwd_bwd", forward_and_backward)):
        start = time.perf_counter()
        try:
            jax.jit(fn).lower(*args).compile()
            result[name] = "OK"
        except Exception as error:  # noqa: BLE001 - the compiler's message is the result
            lines = [line for line in str(error).splitlines() if line.strip()]
            result[name] = " ".join(lines[:2])[:200]
        result[f"{name}_compile_s"] = round(time.perf_counter() - start, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true",
                        help="compile for TPU topologies through libtpu (deviceless)")
    args = parser.parse_args()

    report = dict(jax=jax.__version__, python=platform.python_version(), vmem=vmem_table(),
                  compile=[])
    if args.compile:
        import libtpu  # noqa: F401 - fail early with a clear ImportError
        from jax.experimental import topologies

        for topology in TOPOLOGIES:
            device = topologies.get_topology_desc(topology, "tpu").devices[0]
            for case in CASES:
                row = dict(topology=topology, device_kind=device.device_kind,
                           **compile_case(device, case))
                report["compile"].append(row)
                print(row, flush=True)
        report["libtpu"] = getattr(libtpu, "__version__", "unknown")
        RESULTS.write_text(json.dumps(report, indent=1) + "\n")

    print("\nVMEM per program (MiB), d_state 16")
    print("| block_d | block_l | fwd bf16 | bwd bf16 | fwd fp32 | bwd fp32 |")
    print("|---|---|---|---|---|---|")
    for row in report["vmem"]:
        print(f"| {row['block_d']} | {row['block_l']} | {row['fwd_bf16_mib']} | "
              f"{row['bwd_bf16_mib']} | {row['fwd_fp32_mib']} | {row['bwd_fp32_mib']} |")
    if report["compile"]:
        print("\nDeviceless compile (libtpu)")
        print("| chip | b, l, d, n, g | dtype | reset | block_d × block_l | fwd | fwd+bwd |")
        print("|---|---|---|---|---|---|---|")
        for r in report["compile"]:
            shape = f"{r['batch']}, {r['length']}, {r['d']}, {r['n']}, {r['groups']}"
            print(f"| {r['device_kind']} | {shape} | {r['dtype']} | {r['reset']} | "
                  f"{r['block_d']} × {r['block_l']} | {r['fwd']} | {r['fwd_bwd']} |")


if __name__ == "__main__":
    main()
