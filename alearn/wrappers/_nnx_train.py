"""``nnx_trainable`` / ``nnx_transform``: what ``nnx.Optimizer`` updates for a rule;
``nnx_value_and_updates``: a rule's updates of any loss for a ``WrappedNNX``."""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax
from flax import nnx, traverse_util

from alearn.rules.base import Rule
from alearn.wrappers._nnx_call import Feedback
from alearn.wrappers.nnx import WrappedNNX
from alearn.wrappers._output import get_output, set_output, split_batch

Array = jax.Array


def nnx_trainable(rule: Rule) -> Any:
    """The ``nnx`` filter of what the optimizer updates: Param, plus Feedback if trained."""
    return nnx.Any(nnx.Param, Feedback) if rule.trains_feedback else nnx.Param


def _keys(path: tuple) -> tuple:
    out = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(getattr(k, attr))
                break
    return tuple(out)


def _split(tree: Any, fb_paths: frozenset) -> tuple[dict, Any, list]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    params, feedback, order = {}, {}, []
    for path, leaf in leaves:
        keys = _keys(path)
        order.append(keys)
        (feedback if keys in fb_paths else params)[keys] = leaf
    dicts = {"params": traverse_util.unflatten_dict(params)}
    if feedback:
        dicts["feedback"] = traverse_util.unflatten_dict(feedback)
    return dicts, treedef, order


def _join(dicts: dict, treedef: Any, order: list, fb_paths: frozenset) -> Any:
    flat_p = traverse_util.flatten_dict(dicts["params"])
    flat_f = traverse_util.flatten_dict(dicts.get("feedback", {}))
    return treedef.unflatten([(flat_f if k in fb_paths else flat_p)[k] for k in order])


def nnx_transform(rule: Rule, optimizer: optax.GradientTransformation,
                  model: nnx.Module) -> optax.GradientTransformation:
    """``optax.chain(rule.transform(), optimizer)`` for ``nnx.Optimizer`` on ``model``.

    The rule's parameter-side part (KP's decay, ASAP's freeze-and-decay, ...) works on
    ``{"params": ..., "feedback": ...}`` dicts; ``nnx.Optimizer`` hands its transformation
    pure State trees, so this adapter sorts their leaves by the paths of ``model``'s
    :class:`Feedback` variables and puts the result back in place.
    """
    inner = rule.transform()
    fb_state = nnx.as_pure(nnx.state(model, Feedback))
    fb_paths = frozenset(_keys(p) for p, _ in jax.tree_util.tree_flatten_with_path(fb_state)[0])

    def init(params):
        return inner.init(_split(params, fb_paths)[0])

    def update(updates, state, params=None):
        dicts, treedef, order = _split(updates, fb_paths)
        pdicts = None if params is None else _split(params, fb_paths)[0]
        new, state = inner.update(dicts, state, pdicts)
        return _join(new, treedef, order, fb_paths), state

    return optax.chain(optax.GradientTransformation(init, update), optimizer)


def nnx_value_and_updates(loss_fn: Callable[..., Array], model: Any, *batch: Any,
                          targets: Any = None, **kwargs: Any) -> tuple[tuple[Array, Any], Any]:
    """((loss, outputs), updates) for an NNX-wrapped model.

    Two ways to pass the data (as :func:`alearn.value_and_updates`):

    - ``nnx_value_and_updates(loss_fn, model, x, *loss_args)``: the model runs on ``x``,
      the loss is ``loss_fn(outputs, *loss_args)``;
    - ``nnx_value_and_updates(loss_fn, model, *inputs, targets=t)``: every positional
      array is a model input (``model(tokens, lengths)``), the loss is ``loss_fn(outputs,
      t)`` (``t`` a tuple: ``loss_fn(outputs, *t)``).

    Keyword arguments go to the model (e.g. ``training=True``). ``updates`` is an
    ``nnx.State`` of the variables :func:`nnx_trainable` selects (what
    ``nnx.Optimizer.update`` takes). For BP it is ``nnx.grad`` of the loss. For rules that
    need the output error (DFA) δ_L = ∂loss/∂(the output ``wrap_nnx(..., output=)``
    selects) comes from a first forward pass on a clone of the model (no state moves; XLA
    shares the forward under jit) and is handed to every layer, so layers inside
    ``nnx.scan`` bodies work.
    """
    if not isinstance(model, WrappedNNX):
        raise TypeError(f"nnx_value_and_updates needs alearn.wrap_nnx(model, ...), got "
                        f"{type(model).__name__}")
    inputs, loss_args = split_batch(batch, targets, "nnx_value_and_updates")
    given = {}
    if model.rule.needs_carrier:  # δ_L first: the output error of a forward pass on a clone
        first = nnx.clone(model)
        out0 = first(*inputs, output_error=model.zeros_error(inputs), **kwargs)
        sel = get_output(out0, model.output, model.name)
        error = jax.grad(lambda o: loss_fn(set_output(out0, model.output, o), *loss_args))(sel)
        given = {"output_error": jax.lax.stop_gradient(error)}

    def objective(m):
        out = m(*inputs, **given, **kwargs)
        return loss_fn(out, *loss_args), out

    diff = nnx.DiffState(0, nnx_trainable(model.rule))
    return nnx.value_and_grad(objective, argnums=diff, has_aux=True)(model)
