"""Training throughput of Mamba-130M: ssmjax's sharded train step vs mamba-ssm's PyTorch step.

    python experiments/benchmarks/train_throughput.py [--batch 8 --length 2048 --steps 10]

Measures, in one run on the same machine: tokens/s of ssmjax's jit-compiled train step
(bf16 compute, float32 params, AdamW) on 1 GPU and, when there are several, data-parallel
over all of them (same per-device batch); and tokens/s of mamba-ssm's ``MambaLMHeadModel``
trained with bf16 autocast and AdamW on 1 GPU, when mamba-ssm is importable. Prints a table
last and writes ``experiments/results/train_throughput_<gpu>.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssmjax.models import MambaConfig, MambaLM
from ssmjax.train.loop import make_train_step
from ssmjax.train.optim import OptimizerConfig, make_optimizer
from ssmjax.train.sharding import batch_sharding, jit_under_mesh, make_mesh, state_shardings

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def ssmjax_tokens_per_s(devices, batch_per_device: int, length: int, steps: int,
                        scan_backend: str, d_model: int, n_layer: int) -> float:
    """Median-free steady-state rate: ``steps`` train steps after two warm-up steps."""
    mesh = make_mesh(data=len(devices), devices=devices)
    config = MambaConfig(d_model=d_model, n_layer=n_layer, dtype="bfloat16", scan_backend=scan_backend)
    model = MambaLM(config, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(
        model, make_optimizer(OptimizerConfig(learning_rate=6e-4), 10_000, model), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    shardings = state_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    data = batch_sharding(mesh)
    step = jit_under_mesh(make_train_step(graphdef, 1), mesh, in_shardings=(shardings, data),
                          out_shardings=(shardings, None), donate_argnums=0)
    batch_size = batch_per_device * len(devices)
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (batch_size, length + 1))
    batch = jax.device_put(dict(inputs=jnp.asarray(tokens[:, :-1], jnp.int32),
                                targets=jnp.asarray(tokens[:, 1:], jnp.int32),
                                loss_mask=jnp.ones((batch_size, length), bool)), data)
    for _ in range(2):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    assert np.isfinite(float(metrics["loss"]))
    return batch_size * length * steps / (time.perf_counter() - start)


def mamba_ssm_tokens_per_s(batch_size: int, length: int, steps: int, d_model: int,
                           n_layer: int) -> float | None:
    try:
        import torch
        import torch.nn.functional as F
        from mamba_ssm.models.config_mamba import MambaConfig as TorchMambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    except ImportError as error:
        print(f"mamba-ssm not importable ({error}); skipping the PyTorch peer")
        return None
    config = TorchMambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=50277, ssm_cfg={},
                              rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
                              pad_vocab_size_multiple=8, tie_embeddings=True)
    model = MambaLMHeadModel(config, device="cuda", dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=True)
    tokens = torch.randint(0, 50277, (batch_size, length + 1), device="cuda")
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(inputs).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):
        train_step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        loss = train_step()
    end.record()
    torch.cuda.synchronize()
    assert torch.isfinite(loss)
    return batch_size * length * steps / (start.elapsed_time(end) / 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="sequences per device")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--scan-backend", default="auto")
    parser.add_argument("--d-model", type=int, default=768, help="768 and 24 layers: Mamba-130M")
    parser.add_argument("--n-layer", type=int, default=24)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON path (default: results/)")
    args = parser.parse_args()
    devices = jax.devices()
    gpu = devices[0].device_kind
    rows = [dict(system="ssmjax", devices=1, tokens_per_s=ssmjax_tokens_per_s(
        devices[:1], args.batch, args.length, args.steps, args.scan_backend, args.d_model, args.n_layer))]
    if len(devices) > 1:
        rows.append(dict(system="ssmjax", devices=len(devices), tokens_per_s=ssmjax_tokens_per_s(
            devices, args.batch, args.length, args.steps, args.scan_backend, args.d_model,
            args.n_layer)))
    peer = mamba_ssm_tokens_per_s(args.batch, args.length, args.steps, args.d_model, args.n_layer)
    if peer is not None:
        rows.append(dict(system="mamba-ssm (PyTorch)", devices=1, tokens_per_s=peer))
    result = dict(gpu=gpu, d_model=args.d_model, n_layer=args.n_layer, batch_per_device=args.batch, length=args.length, steps=args.steps,
                  scan_backend=args.scan_backend, jax=jax.__version__, rows=rows)
    name = "train_throughput_" + gpu.lower().replace(" ", "_").replace("-", "_") + ".json"
    out = args.out or RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    base = rows[0]["tokens_per_s"]
    print(f"\nMamba d_model {args.d_model} × {args.n_layer} layers training, {args.batch} × {args.length} tokens per device, bf16, {gpu}")
    print("| system | devices | tokens/s | vs ssmjax 1 device |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['system']} | {row['devices']} | {row['tokens_per_s']:,.0f} | "
              f"{row['tokens_per_s'] / base:.2f}× |")


if __name__ == "__main__":
    main()
