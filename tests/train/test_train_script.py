"""experiments/train.py: run directories named by the settings, resumes that find them, one-line
errors, a plain --help."""

import importlib.util
import pathlib
import re

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "train.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_is_plain_text_and_every_option_has_help():
    parser = load_script().build_parser()
    text = parser.format_help()
    assert "``" not in text and ":mod:" not in text
    for action in parser._actions:
        assert action.help, action.option_strings


@pytest.mark.parametrize("argv, message", [
    (["--config", "no_such_config"], "--config 'no_such_config': no such config in .* available: "),
    (["--config", "selective_copying_cpu", "--set", "train.stepz=1"],
     "--set train.stepz: unknown key; valid keys are: name, model.d_model"),
    (["--config", "selective_copying_cpu", "--set", "train.steps=x"],
     "--set train.steps=x: cannot parse 'x' as int"),
    (["--config", "selective_copying_cpu", "--resume"], "no checkpoint to resume from in "),
])
def test_expected_errors_are_one_line_and_a_nonzero_exit(argv, message, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.chdir(tmp_path)
    assert load_script().main(argv + ["--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and re.match(f"error: {message}", lines[0]), captured.err


@pytest.mark.slow
def test_the_readme_training_example_works_in_the_order_written(tmp_path, monkeypatch, capsys):
    """The main job, then the README's two commands: a new run, and the main job's extended
    (steps cut to 2 and 4; how long a run trains is not part of its settings, so the
    directories are those of the full commands)."""
    monkeypatch.chdir(tmp_path)
    script = load_script()
    short = ["--set", "train.steps=2", "--no-progress"]
    main_job = ["--config", "selective_copying_cpu"]
    assert script.main(main_job + short) == 0
    assert (tmp_path / "runs" / "selective_copying_cpu" / "curves.png").is_file()

    wider = main_job + ["--set", "model.d_model=64"]
    assert script.main(wider + short) == 0
    runs = sorted(path.name for path in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and re.fullmatch(r"selective_copying_cpu-[0-9a-f]{8}", runs[1]), runs

    capsys.readouterr()
    assert script.main(main_job + ["--resume"] + short) == 0  # complete: nothing to train
    assert "complete at step 2" in capsys.readouterr().out
    assert script.main(main_job + ["--resume", "--set", "train.steps=4", "--no-progress"]) == 0
    assert "resuming at step 2 with train.steps: 2 → 4" in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == runs

    # The wider run's directory, asked for by name, holds another model: named, one line.
    assert script.main(main_job + ["--resume", "--name", runs[1]] + short) == 2
    assert "model.d_model: 64 → 32" in capsys.readouterr().err
