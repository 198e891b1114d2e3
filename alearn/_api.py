"""Top-level entry points: ``alearn.init`` and ``alearn.rule_updates``."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from alearn._layers.tape import checked
from alearn.rules.base import Rule
from alearn.rules.bp import BP
from alearn.wrappers._output import get_output, set_output, split_batch
from alearn.wrappers.linen import Wrapped

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
                      variables: dict, *batch: Any, targets: Any = None, train: bool = True,
                      rngs: dict | None = None) -> tuple[tuple[Array, Any, dict], dict]:
    """((loss, outputs, new_model_state), updates) of any loss under ``rule``.

    Two ways to pass the data:

    - ``value_and_updates(loss_fn, model, rule, v, x, *loss_args)``: the model is applied
      to ``x`` and the loss is ``loss_fn(outputs, *loss_args)`` (e.g. ``(logits, labels)``,
      ``(predictions, targets)``, ``(outputs, x)`` for an autoencoder);
    - ``value_and_updates(loss_fn, model, rule, v, *inputs, targets=t)``: every positional
      array is a model input (``model.apply(v, tokens, lengths)``) and the loss is
      ``loss_fn(outputs, t)`` (``t`` a tuple: ``loss_fn(outputs, *t)``).

    For BP ``updates`` is ``jax.grad`` of that loss; for the other rules it is what the rule
    prescribes, with DFA's output error δ_L = ∂loss/∂outputs (of the output that
    ``alearn.wrap(..., output=)`` selects). δ_L reaches a wrapped model's layers as the
    cotangent of a carrier added to the output (one forward pass); where a layer sits in a
    lifted transform (``nn.scan``, ``nn.remat``), which the carrier cannot leave, δ_L is
    taken from a first forward pass and handed to every layer instead (two forward passes:
    XLA does not merge them).
    ``updates`` has the structure of :func:`trainable`; model state (batch statistics) is
    updated when ``train`` is true; ``rngs`` (e.g. ``{"dropout": key}``) go to ``apply``.
    """
    inputs, loss_args = split_batch(batch, targets, "value_and_updates")
    train_vars = trainable(rule, variables)
    rest = {k: v for k, v in variables.items() if k not in train_vars}
    if isinstance(rule, BP):
        rest.pop("feedback", None)  # BP's reference gradient on an FA-trained model
    mutable = [k for k in rest if k != "feedback"] if train else []
    mutable = mutable or False
    extra = {"rngs": rngs} if rngs else {}
    def run(tv, **kw):
        out = model.apply({**rest, **tv}, *inputs, rule=rule, train=train, mutable=mutable,
                          **extra, **kw)
        return out if mutable else (out, {})

    def objective_with(extra_kw):
        def objective(tv):
            outputs, state = run(tv, **extra_kw)
            return loss_fn(outputs, *loss_args), (outputs, dict(state))
        return objective

    given = (isinstance(model, Wrapped) and rule.needs_carrier
             and not _carrier_reaches_every_layer(model, objective_with({}), train_vars))
    if given:  # δ_L first: the output error of a forward pass
        zeros = _zeros_error(model, {**rest, **train_vars}, inputs, train,
                             {**extra, "mutable": mutable})
        outputs0, _ = run(train_vars, output_error=zeros)
        sel = get_output(outputs0, model.output, model.name)
        error = jax.grad(lambda o: loss_fn(set_output(outputs0, model.output, o),
                                           *loss_args))(sel)
        extra_kw = {"output_error": jax.lax.stop_gradient(error)}
    else:
        extra_kw = {}
    with checked(model):
        (loss, (outputs, state)), grads = jax.value_and_grad(
            objective_with(extra_kw), has_aux=True)(train_vars)
    return (loss, outputs, state), grads


def _carrier_reaches_every_layer(model: Wrapped, objective: Callable, tv: dict) -> bool:
    """Whether the carrier form traces (no layer inside a lifted transform); decided once
    per (model, rule, shapes) by an abstract trace and remembered on the wrapper."""
    key = (objective.__qualname__, jax.tree.map(lambda a: (a.shape, a.dtype), tv))
    cache = model.__dict__.setdefault("_carrier_ok", {})
    try:
        hashable = hash(str(key))
    except TypeError:
        hashable = None
    if hashable in cache:
        return cache[hashable]
    try:
        with checked(model):
            jax.eval_shape(jax.grad(lambda t: objective(t)[0]), tv)
        ok = True
    except jax.errors.UnexpectedTracerError:
        ok = False
    except ValueError as exc:
        if "lifted transform" not in str(exc):
            raise
        ok = False
    cache[hashable] = ok
    return ok


def _zeros_error(model: Wrapped, variables: dict, inputs: tuple, train: bool,
                 extra: dict) -> Array:
    """Zeros of the selected output's shape (the forward pass does not read δ_L)."""
    plain = {k: v for k, v in variables.items() if k != "feedback"}
    out = jax.eval_shape(lambda v: model.apply(v, *inputs, rule=BP(), train=train, **extra),
                         plain)
    out = out[0] if extra.get("mutable") else out
    sel = get_output(out, model.output, model.name)
    return jnp.zeros(sel.shape, sel.dtype)


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
