"""``rule_linear``: a linear map whose backward pass is delegated to a learning rule."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import flax.linen as nn
import jax

from alearn._layers.ops import LinearOp
from alearn._layers.tape import Tape

Array = jax.Array


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def rule_linear(rule: Any, op: LinearOp, x: Array, kernel: Array, feedback: dict,
                ctx: Any, carrier: Array | None):
    """Returns ``(op.apply(x, kernel), carrier)``; the VJP is ``rule.backward``.

    The cotangent of ``feedback`` is the rule's update for the feedback weights, the
    cotangent of ``carrier`` passes through unchanged (so every layer sees δ_L), and
    ``ctx`` (e.g. a shared activation) receives no cotangent: it is a training signal, not
    part of the computation being differentiated.
    """
    del rule, feedback, ctx
    return op.apply(x, kernel), carrier


def _marker(a: Array) -> Array:
    """A zero-size slice of ``a``: carries a's type (incl. shard_map varying axes).

    Sliced, not reshaped: a reshape of an array with an explicit sharding (NNX under a
    mesh with Explicit axes) needs an output sharding."""
    return a[(slice(0, 0),) * a.ndim] if a.ndim else a.reshape(1)[:0]


def _match(ct: Array | None, marker: Array) -> Array | None:
    """Gives cotangent ``ct`` the shard_map varying axes of its primal (``marker``).

    Inside ``jax.shard_map`` (e.g. the AL device pipeline), a cotangent varying over an
    axis its primal is replicated over is summed over it (the transpose of the implicit
    broadcast), and one missing an axis is marked varying. Outside shard_map: identity.
    """
    if ct is None:
        return ct
    have = frozenset(jax.typeof(ct).manual_axis_type.varying)
    want = frozenset(jax.typeof(marker).manual_axis_type.varying)
    if extra := tuple(sorted(have - want)):
        ct = jax.lax.psum(ct, extra)
    if missing := tuple(sorted(want - have)):
        ct = jax.lax.pcast(ct, missing, to="varying")
    return ct


def _fwd(rule, op, x, kernel, feedback, ctx, carrier):
    y = op.apply(x, kernel)
    markers = (_marker(x), _marker(kernel), jax.tree.map(_marker, feedback))
    return (y, carrier), (rule.residuals(op, x, kernel, feedback, ctx), markers)


def _bwd(rule, op, res, cotangents):
    res, (mx, mk, mfb) = res
    g, carrier_g = cotangents
    dx, dkernel, dfeedback = rule.backward(op, res, g, carrier_g)
    dfeedback = {k: _match(dfeedback.get(k), mfb[k]) for k in mfb}
    return _match(dx, mx), _match(dkernel, mk), dfeedback, None, carrier_g


rule_linear.defvjp(_fwd, _bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def rule_linear_given(rule: Any, op: LinearOp, x: Array, kernel: Array, feedback: dict,
                      ctx: Any, error: Array):
    """``op.apply(x, kernel)`` whose VJP is ``rule.backward`` with δ_L = ``error`` given.

    The variant of :func:`rule_linear` for a tape created with ``error=``: δ_L is an input
    (it gets no cotangent) instead of the cotangent of a carrier threaded through the
    layers, so the layer may sit inside a lifted transform (``nn.scan``, ``nnx.scan``).
    """
    del rule, feedback, ctx, error
    return op.apply(x, kernel)


def _fwd_given(rule, op, x, kernel, feedback, ctx, error):
    y = op.apply(x, kernel)
    markers = (_marker(x), _marker(kernel), jax.tree.map(_marker, feedback))
    return y, (rule.residuals(op, x, kernel, feedback, ctx), error, markers)


def _bwd_given(rule, op, res, g):
    res, error, (mx, mk, mfb) = res
    dx, dkernel, dfeedback = rule.backward(op, res, g, error)
    dfeedback = {k: _match(dfeedback.get(k), mfb[k]) for k in mfb}
    return _match(dx, mx), _match(dkernel, mk), dfeedback, None, None


rule_linear_given.defvjp(_fwd_given, _bwd_given)


def run_rule(tape: Tape, op: LinearOp, x: Array, kernel: Array, feedback: dict) -> Array:
    """One rule-aware linear map on the tape: context, then the rule's custom VJP.

    Uses the tape's given output error when it has one (:func:`rule_linear_given`), the
    carrier otherwise (:func:`rule_linear`); advances ``tape.layer_index``.
    """
    rule = tape.rule
    tape.feedback = feedback  # visible to rule.context (e.g. Forward Alignment's C)
    ctx = rule.context(tape, x, op)
    if rule.needs_carrier and tape.error is not None:
        y = rule_linear_given(rule, op, x, kernel, feedback, ctx, tape.error)
    else:
        y, tape.carrier = rule_linear(rule, op, x, kernel, feedback, ctx, tape.carrier)
    tape.layer_index += 1
    return y


def _default_rule_of_model(module: nn.Module, rule: Any) -> bool:
    """Whether ``rule`` is the very default object of the root model's ``rule=`` argument."""
    root = module
    while isinstance(root.parent, nn.Module):
        root = root.parent
    try:
        param = inspect.signature(type(root).__call__).parameters.get("rule")
    except (TypeError, ValueError):
        return False
    return param is not None and param.default is rule


def _check_feedback(module: nn.Module, rule: Any) -> None:
    """Raises when a model holding feedback weights is applied without ``rule=``.

    The native models default to BP, so ``model.apply(variables, x)`` on variables
    initialised for FA, DFA, KP, ... would silently train by backprop. An explicitly passed
    rule (e.g. BP as the reference of an alignment measurement) is left alone.
    """
    if module.is_initializing():
        return
    present = set(module.variables.get("feedback", {}))
    extra = sorted(present - set(rule.feedback_names))
    if extra and _default_rule_of_model(module, rule):
        path = "/".join(module.path) or type(module).__name__
        raise ValueError(
            f"layer {path!r} holds feedback variable(s) {extra} but the model was applied "
            f"without rule= (default rule {rule.name!r}): pass the rule the variables were "
            "initialised for, model.apply(variables, x, rule=rule)")


def apply_rule(module: nn.Module, op: LinearOp, x: Array, kernel: Array, tape: Tape) -> Array:
    """Runs ``op`` on (x, kernel) under the tape's rule, creating feedback variables.

    Feedback variables live in the ``"feedback"`` collection and are drawn at init from the
    ``"params"`` RNG stream under their own names, so they are independent of (never
    aliased to) the forward weights.
    """
    if not isinstance(tape, Tape):
        raise TypeError(
            f"{type(module).__name__} needs the model's Tape as its second argument, got "
            f"{type(tape).__name__}"
        )
    rule = tape.rule
    _check_feedback(module, rule)
    feedback = {}
    for name in rule.layer_feedback_names(tape, op):
        var = module.variable(
            "feedback",
            name,
            lambda n=name: rule.draw_feedback(tape, n, module.make_rng("params"), op),
        )
        feedback[name] = var.value
    return run_rule(tape, op, x, kernel, feedback)
