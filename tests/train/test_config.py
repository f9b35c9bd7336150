"""Config overrides applied at once, run identity and run names."""

import itertools

import pytest

from ssmjax.train import override, run_name
from ssmjax.train.config import config_json, parse_assignments, run_differences
from tiny import host_token_config, tiny_config


@pytest.mark.parametrize("assignments", list(itertools.permutations(
    ["train.grad_accum_steps=3", "train.batch_size=48", "model.mixer=s4", "model.l_max=20"])))
def test_the_order_of_overrides_does_not_matter(assignments):
    # One key at a time, grad_accum_steps=3 before batch_size=48 failed (8 % 3), and
    # mixer=s4 before l_max failed (S4 needs l_max).
    config = override(tiny_config(), list(assignments))
    assert (config.train.batch_size, config.train.grad_accum_steps) == (48, 3)
    assert (config.model.mixer, config.model.l_max) == ("s4", 20)


def test_overrides_parse_and_reject():
    config = override(tiny_config(), ["train.steps=5", "model.dtype=bfloat16",
                                      "train.optimizer.learning_rate=0.5", "model.dt_rank=3",
                                      "train.best_metric=eval_accuracy", "train.eval_batches=3"])
    assert (config.train.steps, config.model.dtype, config.train.optimizer.learning_rate,
            config.model.dt_rank, config.train.best_metric) == (5, "bfloat16", 0.5, 3, "eval_accuracy")
    with pytest.raises(ValueError, match="train.stepz: unknown key; valid keys are: .*train.steps"):
        override(config, ["train.stepz=1"])
    with pytest.raises(ValueError, match=r"--set train.steps=x: cannot parse 'x' as int"):
        override(config, ["train.steps=x"])
    with pytest.raises(ValueError, match=r"--set train.steps=-1: train.steps is -1, expected a "
                                         "positive integer"):
        override(config, ["train.steps=-1"])
    with pytest.raises(ValueError, match="--set train.optimizer.schedule=linear: schedule is 'linear'"):
        override(config, ["train.optimizer.schedule=linear"])
    with pytest.raises(ValueError, match="expected key=value"):
        override(config, ["train.steps"])
    with pytest.raises(ValueError, match="train.optimizer: a group, set one of its keys: "
                                         "train.optimizer.learning_rate"):
        override(config, ["train.optimizer=1"])
    with pytest.raises(ValueError, match="train.best_metric is 'eval_perplexityy', expected one "
                                         "of the token objective's"):
        override(config, ["train.best_metric=eval_perplexityy"])
    with pytest.raises(ValueError, match="train.eval_batches is None .* drawn on device"):
        override(config, ["train.eval_batches=None"])


def test_typed_overrides():
    config = override(tiny_config(), {"train.steps": 5, "train.optimizer.learning_rate": 1,
                                      "model.serpent_compression_rates": [2, 3], "train.seed": "7"})
    assert config.train.steps == 5 and config.train.seed == 7
    assert config.train.optimizer.learning_rate == 1.0
    assert isinstance(config.train.optimizer.learning_rate, float)
    assert config.model.serpent_compression_rates == (2.0, 3.0)
    with pytest.raises(ValueError, match="train.steps: 1.5 is a float, expected int"):
        override(tiny_config(), {"train.steps": 1.5})
    with pytest.raises(ValueError, match="train.steps: True is a bool, expected int"):
        override(tiny_config(), {"train.steps": True})


def test_call_boundaries_are_checked_with_the_final_values():
    with pytest.raises(ValueError, match=r"--set train.steps_per_call=2: train.log_every is 1, "
                                         r"expected a multiple of train.steps_per_call \(2\)"):
        override(tiny_config(), ["train.steps_per_call=2"])
    for order in itertools.permutations(["train.steps_per_call=2", "train.log_every=2"]):
        assert override(tiny_config(), list(order)).train.steps_per_call == 2


def test_logical_axis_rules_are_a_field():
    rules = '(("batch", "data"), ("embed", ("fsdp", "model")), ("state", None))'
    config = override(tiny_config(), [f"train.logical_axis_rules={rules}"])
    assert config.train.logical_axis_rules == (("batch", "data"), ("embed", ("fsdp", "model")),
                                               ("state", None))
    with pytest.raises(ValueError, match="mesh axis 'tensor' is not one of"):
        override(tiny_config(), ['train.logical_axis_rules=(("embed", "tensor"),)'])
    with pytest.raises(ValueError, match=r"names \['embed'\] more than once"):
        override(tiny_config(), ['train.logical_axis_rules=(("embed", "fsdp"), ("embed", None))'])
    # As a checkpoint's JSON holds them (lists), the rules read back equal.
    json_rules = config_json(config)["train"]["logical_axis_rules"]
    assert override(tiny_config(), {"train.logical_axis_rules": json_rules}) == config


def test_the_last_of_repeated_keys_wins():
    assert parse_assignments(["train.steps=3", "train.steps=4"]) == {"train.steps": "4"}
    assert override(tiny_config(), ["train.steps=3", "train.steps=4"]).train.steps == 4


def test_run_names_follow_the_settings_not_how_they_were_written():
    written = tiny_config()
    assert run_name(written, written) == "tiny"
    # How long a run trains and how often it records are not its identity.
    assert run_name(written, override(written, ["train.steps=100", "train.log_every=2"])) == "tiny"
    # Setting a field to the value it has is no change.
    assert run_name(written, override(written, ["model.d_model=16"])) == "tiny"
    changed = run_name(written, override(written, ["model.d_model=64", "train.batch_size=16"]))
    assert changed == run_name(written, override(written, {"train.batch_size": 16,
                                                            "model.d_model": "64"}))
    # A SHA-256 of the changed keys: the same in every process and on every machine.
    assert changed == "tiny-5a34cf08", changed
    assert run_name(written, override(written, ["model.d_model=32"])) not in ("tiny", changed)


def test_run_differences_name_keys_and_accept_fields_added_with_their_default():
    config = host_token_config()
    saved = config_json(config)
    assert run_differences(saved, config) == {}
    assert run_differences(saved, override(config, ["model.d_model=32", "train.steps=50"])) == {
        "model.d_model": (16, 32)}
    # A checkpoint written before a field existed: its default is what the run had.
    del saved["train"]["optimizer"]["ssm_learning_rate"]
    del saved["train"]["best_metric"]
    assert run_differences(saved, config) == {}
    assert run_differences(saved, override(config, ["train.optimizer.ssm_learning_rate=1e-4"])) == {
        "train.optimizer.ssm_learning_rate": (None, 1e-4)}
    saved["train"]["a_removed_field"] = 3
    assert list(run_differences(saved, config)) == ["train.a_removed_field"]
