"""Host-fed training and the objectives: host batches train and resume mid-epoch exactly,
evaluation passes weigh every example once, classification of one and two documents."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssmjax.train import CLASSIFICATION, TOKEN, Checkpointer, TrainingRun, perplexity, train
from ssmjax.train.logging import read_metrics
from ssmjax.train.sharding import make_mesh
from tiny import classification_config, host_token_config


def one_device():
    return make_mesh(1, 1, 1, devices=jax.devices()[:1])


def train_losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_host_task_trains_and_resumes_mid_epoch_in_stacked_calls(tmp_path):
    """40 examples in batches of 8: 5 steps an epoch, so 8 steps start a second epoch. Stopped
    at step 3 (mid-epoch; the checkpoint at 2 is the latest) and resumed two steps per call,
    the run reads the same batches and makes the same updates as the uninterrupted one."""
    train(host_token_config(), tmp_path / "whole", show_progress=False)
    train(host_token_config(), tmp_path / "split", stop_at_step=3, show_progress=False)
    train(host_token_config(steps_per_call=2, log_every=2), tmp_path / "split", resume=True,
          show_progress=False)
    whole, split = train_losses(tmp_path / "whole"), train_losses(tmp_path / "split")
    assert sorted(whole) == list(range(1, 9)) and sorted(split) == [1, 2, 3, 4, 6, 8]
    for step in split:
        np.testing.assert_allclose(split[step], whole[step], rtol=1e-6, err_msg=f"step {step}")
    assert whole[8] < whole[1]  # it learns: every target is its input plus one
    evaluations = [r for r in read_metrics(tmp_path / "whole") if "eval_loss" in r]
    assert [r["step"] for r in evaluations] == [4, 8]


def test_host_evaluation_weighs_every_example_once():
    """13 validation examples in batches of 8: the second batch holds 3 padding rows of
    weight 0. Every metric equals a float64 reference over the 13 examples; training and
    evaluation report the one perplexity."""
    run = TrainingRun.create(host_token_config(), one_device())
    trained = run.run_steps(1, 2)
    np.testing.assert_allclose(float(trained["perplexity"]), np.exp(float(trained["loss"])),
                               rtol=1e-6)
    model, _ = nnx.merge(run.graphdef, run.state)
    data = run.config.task.evaluation_data("validation")

    def reference(count):
        examples = data[np.arange(count)]
        log_probs = log_softmax(model(jnp.asarray(examples["inputs"])))
        targets, scored = examples["targets"], examples["loss_mask"]
        target_log_prob = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
        rank = (log_probs > target_log_prob[..., None]).sum(-1)
        loss = -target_log_prob[scored].mean()
        return {"eval_loss": loss, "eval_accuracy": (log_probs.argmax(-1) == targets)[scored].mean(),
                "eval_perplexity": float(perplexity(loss)), "eval_top5_accuracy": (rank < 5)[scored].mean()}

    metrics = run.evaluate()
    assert set(metrics) == set(TOKEN.eval_metrics)
    for name, expected in reference(len(data)).items():
        np.testing.assert_allclose(metrics[name], expected, rtol=1e-5, err_msg=name)
    # eval_batches set: the first batches of the pass only.
    first = dataclasses.replace(run, config=dataclasses.replace(
        run.config, train=dataclasses.replace(run.config.train, eval_batches=1))).evaluate()
    np.testing.assert_allclose(first["eval_loss"], reference(8)["eval_loss"], rtol=1e-5)


@pytest.mark.parametrize("two_documents", [False, True])
def test_classification_trains_and_evaluates_per_example(two_documents):
    run = TrainingRun.create(classification_config(two_documents), one_device())
    assert run.config.best_metric == "eval_accuracy"
    initial = np.asarray(nnx.merge(run.graphdef, run.state)[0].head.kernel[...])  # a copy: steps donate
    metrics = run.run_steps(1, 3)
    assert set(metrics) == {"loss", "accuracy", "grad_norm"}
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0

    model, _ = nnx.merge(run.graphdef, run.state)
    assert not np.allclose(model.head.kernel[...], initial)
    table = np.asarray(model.embedding.embedding[...], np.float64)
    kernel = np.asarray(model.head.kernel[...], np.float64)
    bias = np.asarray(model.head.bias[...], np.float64)
    data = run.config.task.evaluation_data("validation")
    examples = data[np.arange(len(data))]

    def pool(inputs, mask):
        return (table[inputs] * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)

    second = (pool(examples["inputs2"], examples["mask2"]) if two_documents
              else np.zeros((len(data), table.shape[1])))
    log_probs = log_softmax(np.concatenate([pool(examples["inputs"], examples["mask"]), second],
                                           -1) @ kernel + bias)
    labels = examples["label"]
    metrics = run.evaluate()  # 11 examples in batches of 4: one padding row
    np.testing.assert_allclose(metrics["eval_loss"],
                               -np.take_along_axis(log_probs, labels[:, None], -1).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["eval_accuracy"], (log_probs.argmax(-1) == labels).mean(),
                               rtol=1e-6)


def test_objectives_name_missing_entries_and_pass_segment_ids():
    with pytest.raises(ValueError, match=r"missing \['label'\] .* optionally \['inputs2', 'mask2', "
                                         r"'weight'\]"):
        CLASSIFICATION.batch_keys({"inputs": 0, "mask": 0, "extra": 0})
    assert CLASSIFICATION.batch_keys({"inputs": 0, "mask": 0, "label": 0, "extra": 0}) == {
        "inputs": 0, "mask": 0, "label": 0}
    seen = {}

    def model(inputs, **kwargs):
        seen.update(kwargs)
        return jnp.zeros((*inputs.shape, 4))

    batch = {"inputs": jnp.zeros((2, 3), jnp.int32), "targets": jnp.ones((2, 3), jnp.int32),
             "loss_mask": jnp.ones((2, 3), bool), "segment_ids": jnp.ones((2, 3), jnp.int32)}
    sums = TOKEN.sums(model, batch, True)
    assert set(seen) == {"segment_ids"}
    np.testing.assert_allclose(float(sums["loss_sum"]), 6 * np.log(4), rtol=1e-6)
    assert float(sums["correct_top_k"]) == 6.0  # all logits tie: every target is in the top 5
    with pytest.raises(ValueError, match=r"expects logits \(batch, num_classes\)"):
        CLASSIFICATION.sums(lambda inputs, **kwargs: jnp.zeros((2, 3, 4)),
                            {"inputs": batch["inputs"], "mask": batch["loss_mask"],
                             "label": jnp.zeros((2,), jnp.int32)}, False)


def test_best_checkpoint_by_the_objectives_metric(tmp_path):
    """Accuracy keeps its highest, loss its lowest."""
    for metric, mode, values, best in (("eval_accuracy", "max", [0.5, 0.7, 0.6], 2),
                                       ("eval_loss", "min", [0.5, 0.7, 0.6], 1)):
        checkpointer = Checkpointer(tmp_path / metric, best_metric=metric, best_mode=mode)
        for step, value in enumerate(values, start=1):
            checkpointer.save(step, {"x": jnp.zeros(2)}, {"step": step}, metrics={metric: value})
        checkpointer.wait()
        assert checkpointer.best.all_steps() == [best]
        checkpointer.close()
