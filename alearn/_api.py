"""Top-level entry points: ``alearn.init`` and ``alearn.rule_updates``."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from alearn.layers.tape import checked
from alearn.rules.base import Rule

Array = jax.Array


def init(model: nn.Module, rule: Rule, key: Array, sample_x: Array) -> dict:
    """Initialises ``model`` for ``rule``: returns the variables dict.

    Collections: ``params`` (forward weights), ``feedback`` (the rule's feedback weights,
    present when the rule has any) and model state such as ``batch_stats``.
    """
    # One compiled program instead of op-by-op dispatch: about 2x faster for conv nets.
    init_fn = jax.jit(lambda k, x: model.init({"params": k}, x, rule=rule, train=False))
    with checked(model):
        return dict(init_fn(key, sample_x))


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def trainable(rule: Rule, variables: dict) -> dict:
    """The tree the optimizer updates: params, plus feedback where the rule trains it."""
    out = {"params": variables["params"]}
    if rule.trains_feedback and "feedback" in variables:
        out["feedback"] = variables["feedback"]
    return out


def value_and_updates(loss_fn: Callable[..., Array], model: nn.Module, rule: Rule,
                      variables: dict, *batch: Any, train: bool = True,
                      rngs: dict | None = None) -> tuple[tuple[Array, Any, dict], dict]:
    """((loss, outputs, new_model_state), updates) of any loss under ``rule``.

    The model is applied to ``batch[0]``; the loss is ``loss_fn(outputs, *batch[1:])``
    (e.g. ``loss_fn(logits, labels)``, ``loss_fn(predictions, targets)`` for regression,
    ``loss_fn(outputs, x)`` with ``batch = (x, x)`` for an autoencoder), any scalar. For BP
    ``updates`` is ``jax.grad`` of that loss; for the other rules it is what the rule
    prescribes, with DFA's output error δ_L = ∂loss/∂outputs of the output's shape.
    ``updates`` has the structure of :func:`trainable`; model state (batch statistics) is
    updated when ``train`` is true; ``rngs`` (e.g. ``{"dropout": key}``) go to ``apply``.
    """
    if not batch:
        raise ValueError("value_and_updates needs the batch: (x, *loss_args)")
    x, loss_args = batch[0], batch[1:]
    train_vars = trainable(rule, variables)
    rest = {k: v for k, v in variables.items() if k not in train_vars}
    if not rule.feedback_names:  # e.g. BP's reference gradient on an FA-trained model
        rest.pop("feedback", None)
    mutable = [k for k in rest if k != "feedback"] if train else []
    mutable = mutable or False
    extra = {"rngs": rngs} if rngs else {}

    def objective(tv):
        out = model.apply({**rest, **tv}, x, rule=rule, train=train, mutable=mutable, **extra)
        outputs, state = out if mutable else (out, {})
        return loss_fn(outputs, *loss_args), (outputs, dict(state))

    with checked(model):
        (loss, (outputs, state)), grads = jax.value_and_grad(objective, has_aux=True)(train_vars)
    return (loss, outputs, state), grads


def loss_and_updates(model: nn.Module, rule: Rule, variables: dict, x: Array, y: Array,
                     train: bool = True) -> tuple[tuple[Array, Array, dict], dict]:
    """((loss, logits, new_model_state), updates) for one batch under ``rule``.

    Softmax cross-entropy with integer labels: :func:`value_and_updates` with
    :func:`cross_entropy`. ``updates`` has the structure of :func:`trainable`.
    """
    return value_and_updates(cross_entropy, model, rule, variables, x, y, train=train)


def rule_updates(model: nn.Module, rule: Rule, variables: dict, x: Array, y: Array) -> dict:
    """The per-parameter updates ``rule`` prescribes for batch (x, y).

    Softmax cross-entropy loss; for BP this equals ``jax.grad`` of the loss. The result is
    ``{"params": ...}`` plus ``{"feedback": ...}`` for rules that train feedback weights.
    """
    return loss_and_updates(model, rule, variables, x, y)[1]
