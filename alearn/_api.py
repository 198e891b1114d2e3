"""Top-level entry points: ``alearn.init`` and ``alearn.rule_updates``."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from alearn.rules.base import Rule

Array = jax.Array


def init(model: nn.Module, rule: Rule, key: Array, sample_x: Array) -> dict:
    """Initialises ``model`` for ``rule``: returns the variables dict.

    Collections: ``params`` (forward weights), ``feedback`` (the rule's feedback weights,
    present when the rule has any) and model state such as ``batch_stats``.
    """
    # One compiled program instead of op-by-op dispatch: about 2x faster for conv nets.
    init_fn = jax.jit(lambda k, x: model.init({"params": k}, x, rule=rule, train=False))
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


def loss_and_updates(model: nn.Module, rule: Rule, variables: dict, x: Array, y: Array,
                     train: bool = True) -> tuple[tuple[Array, Array, dict], dict]:
    """((loss, logits, new_model_state), updates) for one batch under ``rule``.

    ``updates`` has the structure of :func:`trainable`; model state (batch statistics)
    is updated when ``train`` is true.
    """
    train_vars = trainable(rule, variables)
    rest = {k: v for k, v in variables.items() if k not in train_vars}
    mutable = [k for k in rest if k != "feedback"] if train else []
    mutable = mutable or False

    def loss_fn(tv):
        out = model.apply({**rest, **tv}, x, rule=rule, train=train, mutable=mutable)
        logits, state = out if mutable else (out, {})
        return cross_entropy(logits, y), (logits, dict(state))

    (loss, (logits, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(train_vars)
    return (loss, logits, state), grads


def rule_updates(model: nn.Module, rule: Rule, variables: dict, x: Array, y: Array) -> dict:
    """The per-parameter updates ``rule`` prescribes for batch (x, y).

    Softmax cross-entropy loss; for BP this equals ``jax.grad`` of the loss. The result is
    ``{"params": ...}`` plus ``{"feedback": ...}`` for rules that train feedback weights.
    """
    return loss_and_updates(model, rule, variables, x, y)[1]
