"""Receiving points: where a rule injects a signal into the backward pass of an activation.

The wrappers place them (``alearn.wrap(..., blocks=, receivers=)``) for rules with
``receives = True``: the forward pass is the identity on ``h``; the backward pass
is ``rule.receiver_backward``, which sees the gradient ``g`` arriving from above and the
output error δ_L (the cotangent of the tape's carrier) and returns the gradient that goes
on down. DFA (ASAP thesis eq. 2.5, the authors' ``Feedback_Receiver``) returns ``D·δ_L``
and drops ``g``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from alearn._layers.linear import _marker, _match

Array = jax.Array


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def rule_receiver(rule: Any, h: Array, feedback: dict, carrier: Array | None):
    """Returns ``(h, carrier)``; the VJP is ``rule.receiver_backward``.

    The cotangent of ``carrier`` passes through unchanged (every receiver and layer sees
    δ_L); the cotangent of ``feedback`` is the rule's update for the receiver's feedback
    variables (``None``: not trained).
    """
    del rule, feedback
    return h, carrier


def _fwd(rule, h, feedback, carrier):
    markers = (_marker(h), jax.tree.map(_marker, feedback))
    return (h, carrier), (rule.receiver_residuals(h, feedback), markers)


def _bwd(rule, res, cotangents):
    res, (mh, mfb) = res
    g, carrier_g = cotangents
    dh, dfeedback = rule.receiver_backward(res, g, carrier_g)
    dfeedback = {k: _match(dfeedback.get(k), mfb[k]) for k in mfb}
    return _match(dh, mh), dfeedback, carrier_g


rule_receiver.defvjp(_fwd, _bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def rule_receiver_given(rule: Any, h: Array, feedback: dict, error: Array):
    """Returns ``h``; the VJP is ``rule.receiver_backward`` with δ_L = ``error`` given."""
    del rule, feedback, error
    return h


def _fwd_given(rule, h, feedback, error):
    markers = (_marker(h), jax.tree.map(_marker, feedback))
    return h, (rule.receiver_residuals(h, feedback), error, markers)


def _bwd_given(rule, res, g):
    res, error, (mh, mfb) = res
    dh, dfeedback = rule.receiver_backward(res, g, error)
    dfeedback = {k: _match(dfeedback.get(k), mfb[k]) for k in mfb}
    return _match(dh, mh), dfeedback, None


rule_receiver_given.defvjp(_fwd_given, _bwd_given)


def run_receiver(tape: Any, h: Array, feedback: dict) -> Array:
    """A receiving point on ``h`` under the tape's rule (given error or carrier)."""
    if tape.error is not None:
        return rule_receiver_given(tape.rule, h, feedback, tape.error)
    h, tape.carrier = rule_receiver(tape.rule, h, feedback, tape.carrier)
    return h
