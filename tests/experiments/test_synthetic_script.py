"""experiments/synthetic.py end to end at tiny sizes: train, stop, continue, evaluate, merge,
write, plot."""

import importlib.util
import json
import pathlib
import signal
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "synthetic.py"


def load_script():
    spec = importlib.util.spec_from_file_location("synthetic_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_trains_evaluates_and_writes_results(tmp_path, capsys):
    script = load_script()
    argv = ["induction_heads_mamba", "selective_copying_s6", "--preset", "cpu-smoke",
            "--steps", "2", "--test-lengths", "8,32", "--workdir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path), "--tag", "test", "--no-progress"]
    assert script.main(argv) == 0
    results = json.loads((tmp_path / "synthetic_test.json").read_text())
    assert (tmp_path / "induction_heads_test.png").stat().st_size > 0
    assert results["preset"] == "cpu-smoke" and results["steps_reduced"] is True
    induction = results["models"]["induction_heads_mamba"]
    assert induction["steps"] == 2 and induction["paper_steps"] == 204_800
    assert induction["overrides"]["train.steps"] == {"paper": 204_800, "used": 2}
    assert set(induction["accuracy_by_length"]) == {"8", "32"}
    for cell in induction["accuracy_by_length"].values():
        assert 0.0 <= cell["accuracy"] <= 1.0 and cell["examples"] == 32
    copying = results["models"]["selective_copying_s6"]
    assert copying["mixer"] == "s6" and 0.0 <= copying["accuracy"] <= 1.0
    assert copying["paper_accuracy"] == pytest.approx(0.97)
    table = capsys.readouterr().out
    assert "| selective_copying_s6 | S6 (no gate) |" in table and "| 2^3 | 2^5 |" in table

    # A second run over the same workdir finds the finished runs and only evaluates them.
    assert script.main(argv) == 0
    again = json.loads((tmp_path / "synthetic_test.json").read_text())
    accuracies = lambda entry: {k: v["accuracy"] for k, v in entry["accuracy_by_length"].items()}  # noqa: E731
    assert accuracies(again["models"]["induction_heads_mamba"]) == accuracies(induction)


def test_rejects_unknown_configs_and_bad_lengths(tmp_path):
    script = load_script()
    with pytest.raises(SystemExit):
        script.main(["no_such_config", "--workdir", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["induction_heads_mamba", "--test-lengths", "2,abc", "--workdir", str(tmp_path)])


def test_stopped_run_continues_evaluates_where_it_stopped_and_merges(tmp_path, monkeypatch):
    from ssmjax.train.logging import RunLogger

    script = load_script()
    common = ["--preset", "cpu-smoke", "--workdir", str(tmp_path / "runs"), "--tag", "test",
              "--no-progress"]
    copying = ["selective_copying_s6", "--steps", "6", *common]
    log = RunLogger.log

    def stop_at_step_3(self, step, metrics, tokens_per_step=None):
        if step == 3 and "loss" in metrics:
            signal.raise_signal(signal.SIGTERM)  # as `timeout` would
        return log(self, step, metrics, tokens_per_step)

    monkeypatch.setattr(RunLogger, "log", stop_at_step_3)
    assert script.main([*copying, "--train-only"]) == 3  # stopped: nothing evaluated
    monkeypatch.setattr(RunLogger, "log", log)
    assert script.main([*copying, "--evaluate-only", "--results-dir", str(tmp_path / "a")]) == 0
    entry = json.loads((tmp_path / "a" / "synthetic_test.json").read_text())["models"][
        "selective_copying_s6"]
    assert (entry["steps"], entry["planned_steps"]) == (3, 6) and entry["steps_reduced"]
    assert entry["train_seconds"] > 0

    assert script.main([*copying, "--train-only"]) == 0  # continues to step 6
    assert not (tmp_path / "runs" / "synthetic_test.json").exists()
    assert script.main([*copying, "--evaluate-only", "--results-dir", str(tmp_path / "a")]) == 0
    entry = json.loads((tmp_path / "a" / "synthetic_test.json").read_text())["models"][
        "selective_copying_s6"]
    assert entry["steps"] == 6 and [step for step, _ in entry["learning_curve"]][-1] == 6

    induction = ["induction_heads_mamba", "--steps", "2", "--test-lengths", "8,16", *common]
    assert script.main([*induction, "--results-dir", str(tmp_path / "b")]) == 0
    assert script.main(["--merge", str(tmp_path / "a" / "synthetic_test.json"),
                        str(tmp_path / "b" / "synthetic_test.json"),
                        "--results-dir", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "synthetic_test.json").read_text())
    assert set(merged["models"]) == {"selective_copying_s6", "induction_heads_mamba"}
    assert len(merged["commands"]) == 2
    assert (tmp_path / "merged" / "induction_heads_test.png").stat().st_size > 0
    assert (tmp_path / "merged" / "selective_copying_test.png").stat().st_size > 0
    with pytest.raises(SystemExit):  # the same model twice
        script.main(["--merge", str(tmp_path / "a" / "synthetic_test.json"),
                     str(tmp_path / "a" / "synthetic_test.json"), "--results-dir", str(tmp_path)])
