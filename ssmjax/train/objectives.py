"""What a model is trained to do: losses and metrics as sums over a batch.

An objective turns a model and a batch into sums (``loss_sum``, the ``count`` it is divided
by, ``correct``, ...), so that micro-batches, steps of an evaluation pass and processes add
up exactly: the mean loss of a batch is ``loss_sum / count`` whatever way it was split.
Evaluation batches carry ``weight: (b,)`` (0 for the padding rows of a pass's last batch,
``ssmjax.data.source.evaluation_batches``); every sum weighs by it, so a full pass counts each
example once. Training batches have no weight: every row counts.

    token prediction ("token")   batch {inputs, targets, loss_mask: (b, l)} [+ segment_ids (b, l)]
                                 → the model's logits (b, l, vocab); mean cross-entropy over the
                                 scored positions; token accuracy; perplexity = exp(mean loss);
                                 evaluation adds top-5 token accuracy
    classification               batch {inputs, mask: (b, l), label: (b,)} [+ inputs2, mask2 for
    ("classification")           two-document tasks] → logits (b, num_classes); mean
                                 cross-entropy and accuracy per example
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from ssmjax.data.source import WEIGHT

TOP_K = 5


def perplexity(mean_token_loss: Any) -> jax.Array:
    """``exp`` of the mean token cross-entropy (nats): the one perplexity of training,
    evaluation and the tests."""
    return jnp.exp(jnp.asarray(mean_token_loss, jnp.float32))


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better (losses and perplexities)."""
    return "loss" in metric or "perplexity" in metric


def _token_weights(batch: Mapping[str, jax.Array]) -> jax.Array:
    """``(b, l)`` float32: the scored positions, times the row weights of an evaluation batch."""
    weights = batch["loss_mask"].astype(jnp.float32)
    if WEIGHT in batch:
        weights = weights * batch[WEIGHT].astype(jnp.float32)[:, None]
    return weights


def _row_weights(batch: Mapping[str, jax.Array], rows: int) -> jax.Array:
    return batch[WEIGHT].astype(jnp.float32) if WEIGHT in batch else jnp.ones((rows,), jnp.float32)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Mean token cross-entropy over ``loss_mask``: ``logits (b, l, v)``, ``targets, loss_mask (b, l)``."""
    sums = token_sums(logits, {"targets": targets, "loss_mask": loss_mask})
    return sums["loss_sum"] / jnp.maximum(sums["count"], 1)


def masked_accuracy(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Token accuracy over ``loss_mask``: ``logits (b, l, v)``, ``targets, loss_mask (b, l)``."""
    sums = token_sums(logits, {"targets": targets, "loss_mask": loss_mask})
    return sums["correct"] / jnp.maximum(sums["count"], 1)


def token_sums(logits: jax.Array, batch: Mapping[str, jax.Array],
               top_k: int | None = None) -> dict[str, jax.Array]:
    """Sums of next-token prediction over the scored (and weighted) positions.

    Args:
        logits: ``(b, l, v)``.
        batch: ``targets, loss_mask: (b, l)``, optional ``weight: (b,)``.
        top_k: also count targets among the ``top_k`` highest logits (``correct_top_k``).

    Returns:
        ``loss_sum`` (cross-entropy), ``count`` (scored positions), ``correct`` (argmax equals
        the target) [, ``correct_top_k``], float32 scalars.
    """
    targets = batch["targets"]
    if logits.ndim != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(f"the token objective expects logits (batch, length, vocab) over targets "
                         f"{tuple(targets.shape)}, got logits of shape {tuple(logits.shape)}")
    weights = _token_weights(batch)
    sums = {"loss_sum": jnp.sum(_cross_entropy(logits, targets) * weights),
            "count": jnp.sum(weights),
            "correct": jnp.sum((jnp.argmax(logits, axis=-1) == targets) * weights)}
    if top_k is not None:
        k = min(top_k, logits.shape[-1])
        # The target is among the top k when fewer than k logits beat it (ties count for it).
        target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)
        in_top = jnp.sum(logits > target_logit, axis=-1) < k
        sums["correct_top_k"] = jnp.sum(in_top * weights)
    return sums


@dataclasses.dataclass(frozen=True)
class Objective:
    """A training objective: which batch entries it reads, how it calls the model, what it sums,
    the metrics it reports and the one that picks the best checkpoint by default.

    ``sums(model, batch, evaluation)`` returns float32 scalar sums, ``loss_sum`` and ``count``
    among them (the loss is their ratio); :meth:`metrics` turns totals of those sums into means.
    """

    name: str
    required_keys: tuple[str, ...]
    optional_keys: tuple[str, ...]
    sums: Callable[[Any, Mapping[str, jax.Array], bool], dict[str, jax.Array]]
    means: Callable[[Mapping[str, Any]], dict[str, Any]]
    eval_metrics: tuple[str, ...]
    best_metric: str

    def batch_keys(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``batch`` this objective reads (and ``weight``); raises naming the
        missing ones."""
        missing = [key for key in self.required_keys if key not in batch]
        if missing:
            raise ValueError(f"a batch for the {self.name} objective has keys {sorted(batch)}, "
                             f"missing {missing} (expected {list(self.required_keys)}, optionally "
                             f"{list(self.optional_keys + (WEIGHT,))})")
        return {key: batch[key] for key in (*self.required_keys, *self.optional_keys, WEIGHT)
                if key in batch}

    def metrics(self, totals: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        """Means of summed ``totals`` (one batch's, or a whole pass's), names with ``prefix``."""
        return {prefix + name: value for name, value in self.means(totals).items()}


def _token_model_sums(model: Any, batch: Mapping[str, jax.Array],
                      evaluation: bool) -> dict[str, jax.Array]:
    extra = {"segment_ids": batch["segment_ids"]} if "segment_ids" in batch else {}
    return token_sums(model(batch["inputs"], **extra), batch, TOP_K if evaluation else None)


def _ratio(totals: Mapping[str, Any], name: str) -> Any:
    return totals[name] / jnp.maximum(totals["count"], 1)


def _token_means(totals: Mapping[str, Any]) -> dict[str, Any]:
    loss = _ratio(totals, "loss_sum")
    means = {"loss": loss, "accuracy": _ratio(totals, "correct"), "perplexity": perplexity(loss)}
    if "correct_top_k" in totals:
        means[f"top{TOP_K}_accuracy"] = _ratio(totals, "correct_top_k")
    return means


TOKEN = Objective(
    name="token", required_keys=("inputs", "targets", "loss_mask"), optional_keys=("segment_ids",),
    sums=_token_model_sums, means=_token_means,
    eval_metrics=("eval_loss", "eval_accuracy", "eval_perplexity", f"eval_top{TOP_K}_accuracy"),
    best_metric="eval_loss")
"""Next-token (or answer-token) prediction; the model is called ``model(inputs)``, with
``segment_ids=`` when the batch packs several documents per row."""


def _classification_sums(model: Any, batch: Mapping[str, jax.Array],
                         evaluation: bool) -> dict[str, jax.Array]:
    del evaluation  # the same sums in training and evaluation
    documents = {"mask": batch["mask"]}
    if ("inputs2" in batch) != ("mask2" in batch):
        raise ValueError("a two-document classification batch needs both inputs2 and mask2, got "
                         f"keys {sorted(batch)}")
    if "inputs2" in batch:
        documents.update(inputs2=batch["inputs2"], mask2=batch["mask2"])
    logits = model(batch["inputs"], **documents)
    labels = batch["label"]
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"the classification objective expects logits (batch, num_classes) for "
                         f"labels {tuple(labels.shape)}, got logits of shape {tuple(logits.shape)}")
    weights = _row_weights(batch, labels.shape[0])
    return {"loss_sum": jnp.sum(_cross_entropy(logits, labels) * weights),
            "count": jnp.sum(weights),
            "correct": jnp.sum((jnp.argmax(logits, axis=-1) == labels) * weights)}


def _classification_means(totals: Mapping[str, Any]) -> dict[str, Any]:
    return {"loss": _ratio(totals, "loss_sum"), "accuracy": _ratio(totals, "correct")}


CLASSIFICATION = Objective(
    name="classification", required_keys=("inputs", "mask", "label"),
    optional_keys=("inputs2", "mask2"), sums=_classification_sums, means=_classification_means,
    eval_metrics=("eval_loss", "eval_accuracy"), best_metric="eval_accuracy")
"""Sequence classification; the model is called ``model(inputs, mask=mask)``, or
``model(inputs, mask=mask, inputs2=inputs2, mask2=mask2)`` for two documents, and returns
``(b, num_classes)`` logits."""
