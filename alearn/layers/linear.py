"""``rule_linear``: a linear map whose backward pass is delegated to a learning rule."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax

from alearn.layers.ops import LinearOp
from alearn.layers.tape import Tape

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


def _fwd(rule, op, x, kernel, feedback, ctx, carrier):
    y = op.apply(x, kernel)
    return (y, carrier), rule.residuals(op, x, kernel, feedback, ctx)


def _bwd(rule, op, res, cotangents):
    g, carrier_g = cotangents
    dx, dkernel, dfeedback = rule.backward(op, res, g, carrier_g)
    dfeedback = {k: dfeedback.get(k) for k in rule.feedback_names}
    return dx, dkernel, dfeedback, None, carrier_g


rule_linear.defvjp(_fwd, _bwd)


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
    feedback = {}
    for name in rule.feedback_names:
        var = module.variable(
            "feedback",
            name,
            lambda n=name: rule.init_feedback(n, module.make_rng("params"), op, tape.num_classes),
        )
        feedback[name] = var.value
    tape.feedback = feedback  # visible to rule.context (e.g. Forward Alignment's C)
    ctx = rule.context(tape, x, op)
    y, tape.carrier = rule_linear(rule, op, x, kernel, feedback, ctx, tape.carrier)
    tape.layer_index += 1
    return y
