"""Mamba's synthetic tasks: Selective Copying (Table 1) and Induction Heads extrapolation (Table 2).

    python3 experiments/synthetic.py --preset gpu-short     # all five models, ~5 min on one H100
    python3 experiments/synthetic.py --preset cpu-smoke     # the whole pipeline at tiny sizes, CPU
    python3 experiments/synthetic.py induction_heads_mamba --steps 20000 --batch-size 32

Runs longer than one sitting: train each config in its own process under a time limit
(``timeout`` sends SIGTERM; the run checkpoints the step it is at and stops), run the same
command again to continue, evaluate whatever step was reached, and merge the processes'
results into one table::

    timeout 500 python3 experiments/synthetic.py selective_copying_mamba --preset gpu-session --train-only
    python3 experiments/synthetic.py selective_copying_mamba --preset gpu-session --evaluate-only \
        --results-dir out/mamba
    python3 experiments/synthetic.py --merge out/*/synthetic_h100.json --results-dir out

Trains each named config of ``experiments/configs/`` (default: the five below) with the
training loop of ``experiments/train.py``, restores its last checkpoint and evaluates it:
Selective Copying on held-out batches at the training length; Induction Heads at every test
length 2^6 … 2^20 (trained at 2^8), a few sequences per batch at the long lengths, with the
chunked scan on the CPU and the ``"auto"`` (Pallas) scan on a GPU so that 2^20 positions fit
in memory. Accuracy is the token accuracy at the answer positions only (the tasks'
``loss_mask``). Writes ``<results-dir>/synthetic_<device>.json`` and the figure
``<results-dir>/induction_heads_<device>.png``, and prints the tables next to the paper's
numbers.

Presets (``--preset``) choose step counts and sizes; every field that differs from the
config (the paper's setting) is listed in the JSON under ``overrides``:

    paper       the configs as they are: the paper's full runs (400K steps of batch 64 for
                Selective Copying, 204,800 steps of batch 8 for Induction Heads)
    gpu-session the paper's tasks and models within the GPU time of a few sittings, resumed
                across them: Selective Copying on the paper's constant schedule at 10x its
                learning rate (1e-3), evaluated at the step it reached; Induction Heads: Mamba
                as in the paper (204,800 steps of batch 8, 128 steps per compiled call),
                SeRpEnt on the same 1.64M training sequences in batches of 64 (25,600 steps),
                tested at every length 2^6 … 2^20 on up to 256 sequences each
    gpu-short   the paper's tasks, models and lengths with 3000 steps each, sized for one
                H100 in about 5 minutes in total (an estimate, to be measured): Selective
                Copying at a peak learning rate of 2e-3 with warmup and cosine decay (so that
                some learning fits), Induction Heads at batch 64; SeRpEnt tested at every
                other length. A preview, not a reproduction
    cpu-smoke   tiny lengths and a few hundred steps at most: checks the pipeline end to end
                on the CPU in about 2 minutes; its JSON and figure go under the workdir, not
                the results

A workdir that already holds a run of the same config is continued (or, when finished,
only evaluated); delete it, or pass another ``--workdir``, to start afresh. A run stopped
before its last step is evaluated only under ``--evaluate-only``, and its entry then gives the
step it reached (``steps``) next to the planned one (``planned_steps``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import platform
import re
import sys
import time
from typing import Any, Callable

import jax
from flax import nnx

from ssmjax.data import InductionHeads, SelectiveCopying
from ssmjax.models import count_params
from ssmjax.ops.selective_scan import BACKENDS
from ssmjax.train import CheckpointError, Checkpointer, ExperimentConfig, TrainingRun, train
from ssmjax.train.config import flatten_config, load_config, override, parse_assignments
from ssmjax.train.logging import read_metrics
from ssmjax.train.sharding import make_mesh

ROOT = pathlib.Path(__file__).resolve().parent
CONFIG_DIR = ROOT / "configs"
RESULTS_DIR = ROOT / "results"

DEFAULT_CONFIGS = ("selective_copying_s4", "selective_copying_s6", "selective_copying_mamba",
                   "induction_heads_mamba", "induction_heads_serpent_mamba")

# The Mamba paper's numbers (Gu & Dao 2023) as fractions. Table 1, Selective Copying accuracy
# of the 2-layer models: "no gate" architecture with S4 and with S6, and Mamba.
PAPER_SELECTIVE_COPYING = {"s4": 0.183, "s6": 0.970, "mamba": 0.998}
# Table 2: Mamba, trained at 2^8, is perfect at every test length 2^6 … 2^20.
PAPER_INDUCTION_HEADS = {"mamba": 1.0}
PAPER_TEST_LENGTHS = tuple(2 ** k for k in range(6, 21))
MIXER_NAMES = {"s4": "S4", "s6": "S6 (no gate)", "mamba": "Mamba", "serpent_mamba": "SeRpEnt+Mamba"}


Overrides = dict[str, Any]
"""Typed config overrides: ``{dotted key: value}`` (``ssmjax.train.config.override``)."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """Overrides per task, evaluation sizes and where the outputs go."""

    description: str
    selective_copying: Callable[[ExperimentConfig], Overrides]
    induction_heads: Callable[[ExperimentConfig], Overrides]
    test_lengths: tuple[int, ...] = PAPER_TEST_LENGTHS
    # Test lengths of SeRpEnt models, when fewer: every length compiles the model anew, and a
    # SeRpEnt block holds three scans of different lengths (three GPU kernels) per layer.
    serpent_test_lengths: tuple[int, ...] | None = None
    eval_examples: int = 256
    eval_tokens: int = 2 ** 24
    eval_batch_tokens: int = 2 ** 20
    results_in_workdir: bool = False


def _schedule(steps: int, *, log_every: int) -> Overrides:
    """A run of ``steps`` steps that evaluates and checkpoints once, at its end."""
    return {"train.steps": steps, "train.eval_every": steps, "train.checkpoint_every": steps,
            "train.log_every": log_every}


def _gpu_short_selective_copying(config: ExperimentConfig) -> Overrides:
    # 400K steps at 1e-4 do not shrink to ~1% of the steps at the same rate: a higher peak
    # rate with warmup and cosine decay is what lets a short run learn anything.
    return {**_schedule(3000, log_every=100), "train.optimizer.learning_rate": 2e-3,
            "train.optimizer.schedule": "cosine", "train.optimizer.warmup_steps": 100}


def _gpu_short_induction_heads(config: ExperimentConfig) -> Overrides:
    # Batch 64 instead of 8: one answer per sequence, so the batch sets the signal per step.
    return {**_schedule(3000, log_every=100), "train.batch_size": 64, "train.eval_batches": 8}


def _session_selective_copying(config: ExperimentConfig) -> Overrides:
    # The paper's constant rate, ten times higher: 1e-4 needs its 400K steps, a few sittings
    # hold a tenth of them. Constant, so that the run at any step is the same whatever the
    # planned length: it is evaluated where the time ran out.
    # One checkpoint per run: the workdirs move between machines from sitting to sitting.
    return {"train.optimizer.learning_rate": 1e-3, "train.eval_every": 1000,
            "train.checkpoint_every": 5000, "train.log_every": 250, "train.keep_checkpoints": 1}


def _session_induction_heads(config: ExperimentConfig) -> Overrides:
    # Mamba: the paper's run, 204,800 steps of batch 8. The same 1.64M sequences in batches of
    # 64 (25,600 steps) fit length 256 perfectly but extrapolated only to 2^10 (H100, earlier
    # sittings): the number of updates matters. A step of batch 8 at length 256 is shorter
    # than its launch, so 128 steps run per compiled call.
    # SeRpEnt (three scans per layer, each step several times costlier) keeps batches of 64.
    # One checkpoint per run: the workdirs move between machines from sitting to sitting.
    if config.model.mixer == "serpent_mamba":
        return {"train.batch_size": 64, "train.steps": 25600, "train.eval_every": 1600,
                "train.eval_batches": 8, "train.checkpoint_every": 3200, "train.log_every": 400,
                "train.keep_checkpoints": 1, "train.steps_per_call": 80}
    return {"train.checkpoint_every": 8192, "train.keep_checkpoints": 1,
            "train.steps_per_call": 128}


def _smoke_selective_copying(config: ExperimentConfig) -> Overrides:
    changes = {**_schedule(40, log_every=10), "task.context_length": 28, "task.num_tokens": 4,
               "train.batch_size": 16, "train.eval_batches": 2,
               "train.optimizer.learning_rate": 3e-3, "train.optimizer.warmup_steps": 5}
    return {**changes, "model.l_max": 32} if config.model.l_max is not None else changes


def _smoke_induction_heads(config: ExperimentConfig) -> Overrides:
    # Length 16 is short enough for Mamba to learn the task in these 200 steps on the CPU, so
    # the test lengths show extrapolation rather than chance.
    return {**_schedule(200, log_every=50), "task.sequence_length": 16, "train.batch_size": 32,
            "train.eval_batches": 2, "train.optimizer.warmup_steps": 5}


PRESETS = {
    "paper": Preset("the configs' own (the paper's) step counts",
                    lambda config: {}, lambda config: {}),
    "gpu-session": Preset("the paper's tasks and models resumed over a few GPU sittings: "
                          "Selective Copying at 10x the paper's constant learning rate, "
                          "evaluated at the step reached; Induction Heads: Mamba on the paper's "
                          "204,800 steps of batch 8, SeRpEnt on the same 1.64M sequences in "
                          "batches of 64",
                          _session_selective_copying, _session_induction_heads,
                          # Batches of a few long sequences leave the GPU idle (2^20 tokens
                          # per batch ran 2^19 at 1.2M tokens/s); 2^22 ran out of memory with
                          # three evaluations and two trainings sharing one H100.
                          eval_tokens=2 ** 27, eval_batch_tokens=2 ** 21),
    "gpu-short": Preset("the paper's tasks and models, steps cut to fit ~5 minutes on one H100",
                        _gpu_short_selective_copying, _gpu_short_induction_heads,
                        serpent_test_lengths=PAPER_TEST_LENGTHS[::2]),
    "cpu-smoke": Preset("tiny lengths, 40 (Selective Copying) and 200 (Induction Heads) steps: "
                        "a pipeline check on the CPU, not a result",
                        _smoke_selective_copying, _smoke_induction_heads,
                        test_lengths=tuple(2 ** k for k in range(4, 11)), eval_examples=32,
                        eval_tokens=2 ** 14, eval_batch_tokens=2 ** 12, results_in_workdir=True),
}


def device_tag() -> str:
    """Short name of the default device: ``cpu``, ``h100``, ``h200``, ``a100``, ``tpu_v5e``…"""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    match = re.search(r"\b([A-Z]\d{2,4})\b", device.device_kind)
    if match:
        return match.group(1).lower()
    return re.sub(r"[^a-z0-9]+", "_", device.device_kind.lower()).strip("_") or device.platform


def differences(base: ExperimentConfig, config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """``{dotted key: {"paper": base value, "used": value}}`` for every field that differs."""
    before, after = flatten_config(base), flatten_config(config)
    return {key: {"paper": _jsonable(before[key]), "used": _jsonable(after[key])}
            for key in after if key != "name" and before.get(key) != after[key]}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def build_config(name: str, preset: Preset, args: argparse.Namespace) -> tuple[ExperimentConfig,
                                                                              ExperimentConfig]:
    """``(the config as written, the config with the preset's and the command line's overrides)``."""
    base = load_config(name, CONFIG_DIR)
    if isinstance(base.task, SelectiveCopying):
        changes = preset.selective_copying(base)
    elif isinstance(base.task, InductionHeads):
        changes = preset.induction_heads(base)
    else:
        raise ValueError(f"config {name!r}: task {type(base.task).__name__} is not a synthetic "
                         "task of this script (SelectiveCopying or InductionHeads)")
    if args.steps is not None:
        changes.update(_schedule(args.steps, log_every=max(1, min(args.steps // 10, 500))))
    if args.batch_size is not None:
        changes["train.batch_size"] = args.batch_size
    changes.update(parse_assignments(args.set))  # the command line's --set last: it wins
    return base, override(base, changes)


def restore_for_evaluation(config: ExperimentConfig, workdir: pathlib.Path,
                           scan_backend: str) -> TrainingRun:
    """The trained model of ``workdir`` on one device, with ``scan_backend`` for long inputs."""
    eval_config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, scan_backend=scan_backend))
    run = TrainingRun.create(eval_config, make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    checkpointer = Checkpointer(workdir, keep_last=config.train.keep_checkpoints)
    try:
        pure, _ = checkpointer.restore(run.abstract_checkpoint_state())
    finally:
        checkpointer.close()
    run.load_checkpoint_state(pure)
    return run


def evaluate_lengths(run: TrainingRun, task: InductionHeads, lengths: tuple[int, ...], *,
                     examples: int, max_tokens: int, batch_tokens: int,
                     seed: int) -> dict[int, dict[str, Any]]:
    """Answer accuracy of ``run``'s model on ``task`` at each test length.

    At length L: ``min(examples, max_tokens // L)`` sequences (at least one), in batches of
    ``batch_tokens // L`` sequences (at least one); the same sequences for every model.
    A length that fails (e.g. out of memory) is recorded with its error and skipped.
    """
    results = {}
    for length in lengths:
        count = max(1, min(examples, max_tokens // length))
        per_batch = max(1, min(count, batch_tokens // length))
        batches = math.ceil(count / per_batch)
        test_task = task.at_length(length)
        key = jax.random.fold_in(jax.random.key(seed + 3), length)
        start = time.perf_counter()
        try:
            correct = scored = 0.0
            for index in range(batches):
                sums = run.eval_step(run.state, test_task.batch(jax.random.fold_in(key, index),
                                                                per_batch))
                correct += float(sums["correct"])
                scored += float(sums["count"])
        except Exception as error:  # one failing length (memory) must not lose the others
            results[length] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            print(f"  L = {length:>8}: failed ({type(error).__name__})", flush=True)
            continue
        seconds = time.perf_counter() - start
        results[length] = {"accuracy": correct / scored, "examples": int(scored),
                           "batch_size": per_batch, "seconds": round(seconds, 2)}
        print(f"  L = {length:>8}: accuracy {correct / scored:.4f} over {int(scored)} answers "
              f"({seconds:.1f} s)", flush=True)
    return results


class RunUnfinished(Exception):
    """Training stopped (SIGTERM) before the config's last step."""


def learning_curve(workdir: pathlib.Path) -> list[list[float]]:
    """``[[step, held-out accuracy], ...]`` from the run's periodic evaluations."""
    return [[record["step"], record["eval_accuracy"]] for record in read_metrics(workdir)
            if "eval_accuracy" in record]


def latest_step(workdir: pathlib.Path) -> int | None:
    """The step of the run's latest checkpoint (None: no checkpoint)."""
    checkpointer = Checkpointer(workdir)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()


def run_one(name: str, preset: Preset, args: argparse.Namespace, workdir_root: pathlib.Path,
            eval_backend: str) -> dict[str, Any] | None:
    """Trains (or continues) and evaluates config ``name``; its entry of the results JSON
    (None under ``--train-only``).

    Raises:
        RunUnfinished: training was stopped before its last step (and ``--evaluate-only`` was
            not given).
        CheckpointError: ``--evaluate-only`` and the workdir holds no checkpoint.
    """
    base, config = build_config(name, preset, args)
    workdir = workdir_root / name
    reached = latest_step(workdir)
    if not args.evaluate_only:
        print(f"\n== {name}: {config.train.steps} steps of batch {config.train.batch_size}"
              f"{' (continuing the run in ' + str(workdir) + ')' if reached else ''}", flush=True)
        start = time.perf_counter()
        train(config, workdir, resume=reached is not None, show_progress=not args.no_progress)
        reached = latest_step(workdir)
        record_sitting(workdir, time.perf_counter() - start, reached)
        if reached < config.train.steps:
            raise RunUnfinished(f"{name}: stopped at step {reached} of {config.train.steps} in "
                                f"{workdir}; run the same command again to continue it, or "
                                "pass --evaluate-only to evaluate it as it is")
    if args.train_only:
        return None
    if reached is None:
        raise CheckpointError(f"{name}: no trained run in {workdir} to evaluate")

    print(f"\n== {name}: evaluating step {reached:,} of {config.train.steps:,}", flush=True)
    start = time.perf_counter()
    run = restore_for_evaluation(config, workdir, eval_backend)
    entry: dict[str, Any] = {
        "task": type(config.task).__name__, "mixer": config.model.mixer,
        "parameters": count_params(nnx.merge(run.graphdef, run.state)[0]),
        "steps": reached, "planned_steps": config.train.steps, "paper_steps": base.train.steps,
        "batch_size": config.train.batch_size, "paper_batch_size": base.train.batch_size,
        "steps_reduced": reached * config.train.batch_size < base.train.steps * base.train.batch_size,
        "overrides": differences(base, config),
        "chance_accuracy": config.task.chance_accuracy,
        "train_seconds": round(training_seconds(workdir), 1),
        "learning_curve": learning_curve(workdir), "workdir": str(workdir)}
    if isinstance(config.task, SelectiveCopying):
        metrics = run.evaluate()
        answers = config.train.eval_batches * config.train.batch_size * config.task.num_tokens
        entry.update(accuracy=metrics["eval_accuracy"], eval_loss=metrics["eval_loss"],
                     eval_answers=answers,
                     paper_accuracy=PAPER_SELECTIVE_COPYING.get(config.model.mixer, None))
        print(f"  held-out accuracy {metrics['eval_accuracy']:.4f} over {answers} answers",
              flush=True)
    else:
        lengths = preset.test_lengths
        if config.model.mixer == "serpent_mamba" and preset.serpent_test_lengths is not None:
            lengths = preset.serpent_test_lengths
        by_length = evaluate_lengths(run, config.task, lengths,
                                     examples=args.eval_examples or preset.eval_examples,
                                     max_tokens=preset.eval_tokens,
                                     batch_tokens=preset.eval_batch_tokens, seed=config.train.seed)
        entry.update(train_length=config.task.sequence_length,
                     accuracy_by_length={str(k): v for k, v in by_length.items()},
                     paper_accuracy=PAPER_INDUCTION_HEADS.get(config.model.mixer, None))
    entry["eval_seconds"] = round(time.perf_counter() - start, 1)
    return entry


SITTINGS_FILE = "sittings.jsonl"


def record_sitting(workdir: pathlib.Path, seconds: float, reached: int) -> None:
    """Appends one sitting's training wall time (compilation included) to the workdir."""
    with open(workdir / SITTINGS_FILE, "a") as file:
        file.write(json.dumps({"seconds": round(seconds, 1), "reached_step": reached}) + "\n")


def training_seconds(workdir: pathlib.Path) -> float:
    """Training wall time of the run in ``workdir``, summed over its sittings."""
    path = workdir / SITTINGS_FILE
    if not path.exists():
        return 0.0
    return sum(json.loads(line)["seconds"] for line in path.read_text().splitlines() if line)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def markdown_tables(results: dict[str, Any]) -> str:
    """The Selective Copying and Induction Heads tables next to the paper's numbers."""
    lines = []
    copying = {k: v for k, v in results["models"].items() if v["task"] == "SelectiveCopying"}
    if copying:
        lines += ["Selective Copying: answer accuracy (%), 2-layer models", "",
                  "| model | mixer | parameters | steps (paper) | batch | accuracy | paper | train s | eval s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, entry in copying.items():
            paper = entry["paper_accuracy"]
            lines.append(f"| {name} | {MIXER_NAMES[entry['mixer']]} | {entry['parameters']:,} | "
                         f"{entry['steps']:,} ({entry['paper_steps']:,}) | {entry['batch_size']} | "
                         f"{_percent(entry['accuracy'])} | {_percent(paper)} | "
                         f"{entry['train_seconds']:.0f} | {entry['eval_seconds']:.0f} |")
    induction = {k: v for k, v in results["models"].items() if v["task"] == "InductionHeads"}
    if induction:
        lengths = sorted({int(k) for v in induction.values() for k in v["accuracy_by_length"]})
        header = " | ".join(f"2^{int(math.log2(n))}" if n & (n - 1) == 0 else str(n) for n in lengths)
        lines += ["", "Induction Heads: answer accuracy (%) by test length "
                  f"(trained at {', '.join(sorted({str(v['train_length']) for v in induction.values()}))})",
                  "", f"| model | steps (paper) | batch (paper) | {header} | train s | eval s |",
                  "|---|---|---|" + "---|" * (len(lengths) + 2)]
        for name, entry in induction.items():
            cells = []
            for n in lengths:
                cell = entry["accuracy_by_length"].get(str(n), {})
                cells.append("err" if "error" in cell else _percent(cell.get("accuracy")))
            lines.append(f"| {name} | {entry['steps']:,} ({entry['paper_steps']:,}) | "
                         f"{entry['batch_size']} ({entry['paper_batch_size']}) | "
                         f"{' | '.join(cells)} | {entry['train_seconds']:.0f} | "
                         f"{entry['eval_seconds']:.0f} |")
        paper = _percent(PAPER_INDUCTION_HEADS["mamba"])
        lines.append(f"| paper: Mamba | (204,800) | (8) | "
                     f"{' | '.join(paper if n in PAPER_TEST_LENGTHS else '—' for n in lengths)} | | |")
    return "\n".join(lines)


def _new_figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4))


def _save_figure(figure: Any, axes: Any, path: pathlib.Path) -> None:
    import matplotlib.pyplot as plt

    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_induction_heads(results: dict[str, Any], path: pathlib.Path) -> bool:
    """Accuracy vs test length for every Induction Heads model; False when there is none."""
    induction = {k: v for k, v in results["models"].items() if v["task"] == "InductionHeads"}
    if not induction:
        return False
    figure, axes = _new_figure()
    for name, entry in induction.items():
        points = sorted((int(k), v["accuracy"]) for k, v in entry["accuracy_by_length"].items()
                        if "accuracy" in v)
        if points:
            axes.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o",
                      label=f"{MIXER_NAMES[entry['mixer']]} ({entry['steps']:,} steps)")
    first = next(iter(induction.values()))
    axes.axvline(first["train_length"], color="grey", linestyle="--", linewidth=1,
                 label=f"train length {first['train_length']}")
    axes.axhline(100 * first["chance_accuracy"], color="grey", linestyle=":", linewidth=1,
                 label="chance")
    axes.set_xscale("log", base=2)
    axes.set_ylim(-2, 102)
    axes.set_xlabel("test sequence length")
    axes.set_ylabel("answer accuracy (%)")
    axes.set_title(f"Induction Heads extrapolation ({results['device_tag']}, preset {results['preset']})")
    _save_figure(figure, axes, path)
    return True


def plot_selective_copying(results: dict[str, Any], path: pathlib.Path) -> bool:
    """Held-out accuracy vs training step for every Selective Copying model; False when none."""
    copying = {k: v for k, v in results["models"].items()
               if v["task"] == "SelectiveCopying" and v.get("learning_curve")}
    if not copying:
        return False
    figure, axes = _new_figure()
    for name, entry in copying.items():
        curve = list(entry["learning_curve"])
        if curve[-1][0] < entry["steps"]:  # the final evaluation, when between the periodic ones
            curve.append([entry["steps"], entry["accuracy"]])
        steps, accuracies = zip(*curve)
        line, = axes.plot(steps, [100 * a for a in accuracies], marker=".",
                          label=f"{MIXER_NAMES[entry['mixer']]}")
        if entry.get("paper_accuracy") is not None:
            axes.axhline(100 * entry["paper_accuracy"], color=line.get_color(), linestyle="--",
                         linewidth=1, alpha=0.6)
    first = next(iter(copying.values()))
    axes.axhline(100 * first["chance_accuracy"], color="grey", linestyle=":", linewidth=1,
                 label="chance")
    axes.set_ylim(-2, 102)
    axes.set_xlabel("training step")
    axes.set_ylabel("held-out answer accuracy (%)")
    axes.set_title(f"Selective Copying ({results['device_tag']}, preset {results['preset']}); "
                   "dashed: paper", fontsize=10)
    _save_figure(figure, axes, path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("configs", nargs="*", default=list(DEFAULT_CONFIGS),
                        help=f"configs to train (default: {' '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--steps", type=int, default=None, help="training steps of every config")
    parser.add_argument("--batch-size", type=int, default=None, help="batch of every config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of every config (repeatable)")
    parser.add_argument("--eval-examples", type=int, default=None,
                        help="Induction Heads answers per test length (fewer at long lengths)")
    parser.add_argument("--test-lengths", default=None, metavar="L1,L2,...",
                        help="Induction Heads test lengths (default: the preset's; 2^6 … 2^20)")
    parser.add_argument("--eval-scan-backend", default=None, choices=BACKENDS,
                        help="scan backend for evaluation (default: 'auto' on GPU, else 'chunked')")
    parser.add_argument("--workdir", type=pathlib.Path, default=None,
                        help="runs go to <workdir>/<config> (default runs/synthetic/<preset>)")
    parser.add_argument("--results-dir", type=pathlib.Path, default=None,
                        help="where the JSON and the figure go (default experiments/results; "
                             "the cpu-smoke preset: its workdir)")
    parser.add_argument("--tag", default=None, help="device name in the file names (default: "
                        "from the device, e.g. h100 or cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    stage = parser.add_mutually_exclusive_group()
    stage.add_argument("--train-only", action="store_true",
                       help="train (or continue) the runs, evaluate nothing")
    stage.add_argument("--evaluate-only", action="store_true",
                       help="evaluate the runs at the step they reached, train nothing")
    stage.add_argument("--merge", nargs="+", type=pathlib.Path, metavar="JSON",
                       help="combine results files of separate processes (one model each) into "
                            "one JSON, figure and table in --results-dir; trains nothing")
    args = parser.parse_args(argv)

    if args.merge:
        if args.results_dir is None:
            parser.error("--merge needs --results-dir")
        try:
            results = merge_results(args.merge)
        except (OSError, ValueError) as error:
            parser.error(f"--merge: {error}")
        results["merged_command"] = " ".join(["python3"] + sys.argv)
        write_outputs(results, args.results_dir, args.tag or results["device_tag"])
        return 0

    preset = PRESETS[args.preset]
    if args.test_lengths is not None:
        try:
            lengths = tuple(int(part) for part in args.test_lengths.split(",") if part.strip())
        except ValueError:
            parser.error(f"--test-lengths is {args.test_lengths!r}, expected comma-separated integers")
        if not lengths or min(lengths) < 3:
            parser.error(f"--test-lengths is {args.test_lengths!r}, expected lengths >= 3")
        preset = dataclasses.replace(preset, test_lengths=lengths, serpent_test_lengths=None)
    for name, value in (("--steps", args.steps), ("--batch-size", args.batch_size),
                        ("--eval-examples", args.eval_examples)):
        if value is not None and value < 1:
            parser.error(f"{name} is {value}, expected a positive integer")
    try:
        for name in args.configs:
            build_config(name, preset, args)
    except ValueError as error:
        parser.error(str(error))

    workdir_root = args.workdir or pathlib.Path("runs") / "synthetic" / args.preset
    results_dir = args.results_dir or (workdir_root if preset.results_in_workdir else RESULTS_DIR)
    tag = args.tag or device_tag()
    eval_backend = args.eval_scan_backend or ("auto" if jax.default_backend() == "gpu" else "chunked")
    start = time.perf_counter()
    results: dict[str, Any] = {
        "device": jax.devices()[0].device_kind, "device_tag": tag, "platform": jax.default_backend(),
        "jax": jax.__version__, "python": platform.python_version(), "preset": args.preset,
        "preset_description": preset.description, "command": " ".join(["python3"] + sys.argv),
        "eval_scan_backend": eval_backend, "models": {}}
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"synthetic_{tag}.json"
    try:
        for name in args.configs:
            entry = run_one(name, preset, args, workdir_root, eval_backend)
            if entry is not None:
                results["models"][name] = entry
                # After every model, so that a run cut short keeps what it finished.
                json_path.write_text(json.dumps(results, indent=2) + "\n")
    except RunUnfinished as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return 3
    except (ValueError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.train_only:
        return 0
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_outputs(results, results_dir, tag)
    return 0


def merge_results(paths: list[pathlib.Path]) -> dict[str, Any]:
    """One results dict from the results files of several processes: the first file's
    header, every file's models (a model in two files is an error), and their commands."""
    merged: dict[str, Any] | None = None
    for path in paths:
        results = json.loads(pathlib.Path(path).read_text())
        if merged is None:
            merged = {**results, "models": {}, "commands": [], "wall_seconds": 0.0}
            merged.pop("command", None)
        for key in ("device", "preset", "jax"):
            if results[key] != merged[key]:
                raise ValueError(f"{path}: {key} {results[key]!r} differs from the first file's "
                                 f"{merged[key]!r}")
        for name, entry in results["models"].items():
            if name in merged["models"]:
                _merge_lengths(merged["models"][name], entry, f"{path}: model {name}")
            else:
                merged["models"][name] = entry
        merged["commands"].append(results["command"])
        merged["wall_seconds"] = max(merged["wall_seconds"], results.get("wall_seconds", 0.0))
    if merged is None:
        raise ValueError("no results files given")
    return merged


def _merge_lengths(entry: dict[str, Any], other: dict[str, Any], where: str) -> None:
    """Adds ``other``'s test lengths to ``entry``: the same Induction Heads run evaluated at
    other lengths by another process. Anything else twice is an error."""
    if "accuracy_by_length" not in entry or "accuracy_by_length" not in other:
        raise ValueError(f"{where} is already in an earlier file")
    if (entry["steps"], entry["workdir"]) != (other["steps"], other["workdir"]):
        raise ValueError(f"{where}: another run (step or workdir) than in an earlier file")
    overlap = set(entry["accuracy_by_length"]) & set(other["accuracy_by_length"])
    if overlap:
        raise ValueError(f"{where}: test lengths {sorted(overlap, key=int)} are already in an "
                         "earlier file")
    entry["accuracy_by_length"] = dict(sorted({**entry["accuracy_by_length"],
                                               **other["accuracy_by_length"]}.items(),
                                              key=lambda item: int(item[0])))
    entry["eval_seconds"] = max(entry["eval_seconds"], other["eval_seconds"])


def write_outputs(results: dict[str, Any], results_dir: pathlib.Path, tag: str) -> None:
    """Writes ``synthetic_<tag>.json`` and the figures into ``results_dir``; prints the tables."""
    results["steps_reduced"] = any(e["steps_reduced"] for e in results["models"].values())
    results.pop("note", None)
    if results["steps_reduced"]:
        results["note"] = ("Training was shorter than the paper's (fewer sequences: see each "
                           "model's steps, batch_size, paper_steps, paper_batch_size and "
                           "overrides): those models' numbers preview the paper's experiments, "
                           "they do not reproduce them.")
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"synthetic_{tag}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    figures = [path for path, plot in (
        (results_dir / f"induction_heads_{tag}.png", plot_induction_heads),
        (results_dir / f"selective_copying_{tag}.png", plot_selective_copying))
        if plot(results, path)]
    print()
    print(markdown_tables(results))
    print(f"\n{', '.join(str(p) for p in [json_path, *figures])}; "
          f"{results.get('wall_seconds', 0):.0f} s in total")


if __name__ == "__main__":
    sys.exit(main())
