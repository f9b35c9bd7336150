"""Where a run's numbers go: JSONL, TensorBoard, a progress bar, a summary and a plot."""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Mapping

import tqdm
from tensorboardX import SummaryWriter

from ssmjax.train.objectives import lower_is_better


class RunLogger:
    """Writes ``<workdir>/metrics.jsonl`` (one record per log event, appended across resumes),
    TensorBoard events under ``<workdir>/tensorboard``, and shows a progress bar with the
    loss, tokens/s and ETA. Only the first process of a multi-host job writes."""

    def __init__(self, workdir: str | pathlib.Path, total_steps: int, start_step: int = 0,
                 enabled: bool = True, show_progress: bool = True):
        self.workdir = pathlib.Path(workdir)
        self.enabled = enabled
        self.history: list[dict] = []
        self._shown: dict[str, str] = {}
        if not enabled:
            self.progress = None
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.jsonl = (self.workdir / "metrics.jsonl").open("a")
        self.tensorboard = SummaryWriter(str(self.workdir / "tensorboard"))
        self.progress = tqdm.tqdm(total=total_steps, initial=start_step, dynamic_ncols=True,
                                  disable=not show_progress, unit="step")
        self._last_time = time.perf_counter()
        self._last_step = start_step

    def log(self, step: int, metrics: Mapping[str, float], tokens_per_step: int | None = None) -> dict:
        """Records ``metrics`` at ``step``; adds ``tokens_per_s`` over the steps since the last call."""
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        now = time.perf_counter()
        if tokens_per_step and step > self._last_step:
            record["tokens_per_s"] = tokens_per_step * (step - self._last_step) / (now - self._last_time)
        record["time"] = time.time()
        self._last_time, self._last_step = now, step
        self.history.append(record)
        if not self.enabled:
            return record
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for name, value in record.items():
            if name not in ("step", "time") and math.isfinite(value):
                self.tensorboard.add_scalar(name, value, step)
        self._shown.update({k: f"{v:.4g}" for k, v in record.items()
                            if k in ("loss", "accuracy", "eval_loss", "eval_accuracy", "tokens_per_s")})
        self.progress.set_postfix(self._shown, refresh=False)
        return record

    def advance(self, steps: int = 1) -> None:
        if self.progress is not None:
            self.progress.update(steps)

    def close(self) -> None:
        if not self.enabled:
            return
        self.progress.close()
        self.tensorboard.close()
        self.jsonl.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
    """All records of ``<workdir>/metrics.jsonl``."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary_table(records: list[dict]) -> str:
    """Final value and best value of each metric, as a markdown table."""
    names = sorted({k for r in records for k in r} - {"step", "time"})
    lines = ["| metric | last | best | at step |", "|---|---|---|---|"]
    for name in names:
        points = [(r["step"], r[name]) for r in records if name in r]
        best_step, best = (min if lower_is_better(name) else max)(points, key=lambda p: p[1])
        lines.append(f"| {name} | {points[-1][1]:.4g} | {best:.4g} | {best_step} |")
    return "\n".join(lines)


def plot_curves(records: list[dict], path: str | pathlib.Path) -> None:
    """Loss and accuracy curves (train and eval) against the step, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for name in sorted({k for r in records for k in r}):
        points = [(r["step"], r[name]) for r in records if name in r]
        axis = loss_axis if "loss" in name else accuracy_axis if "accuracy" in name else None
        if axis is not None:
            axis.plot(*zip(*points), label=name, marker="." if name.startswith("eval") else None)
    for axis, title in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.set_xlabel("step")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    loss_axis.set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
