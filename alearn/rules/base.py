"""The learning-rule interface.

A learning rule answers two per-layer questions (ALGORITHMS.md, Part A): how the error
crosses a layer downwards (*feedback*) and which (activation, error) pair forms the weight
update. Layers built on :func:`alearn._layers.rule_linear` hand their backward pass to the
rule, so ``jax.grad`` of an ordinary loss yields the rule's updates for any model, and any
optax optimizer consumes them.

A rule is a frozen (hashable) dataclass whose fields are its hyperparameters. It is
stateless: feedback weights live in the ``"feedback"`` variable collection of each layer,
and forward-pass values (DFA's error carrier, shared activations) travel in the per-call
:class:`alearn._layers.Tape`.

Hooks (override what the rule changes; the defaults are exact backpropagation):

- ``feedback_names`` / ``init_feedback``: feedback variables a layer must own;
  ``layer_feedback_names(tape, op)`` may narrow or rename them per layer (the sharing
  rules' untrained first layer owns only a ``frozen`` marker; a DFA layer owns no D when
  its input is a receiver's output).
- ``on_block(tape, x)``: called by the wrapper at declared block inputs (``blocks=``).
- ``on_finish(tape, logits)``: called by ``Tape.finish`` on the model output (identity by
  default; ASFP+LC attaches its local classifiers' errors there).
- ``context(tape, x, op)``: forward value a layer's backward needs besides x (e.g. the
  shared activation); called once per rule-aware layer, in forward order.
- ``residuals(op, x, kernel, feedback, ctx)``: exactly what the backward pass keeps alive.
- ``backward(op, res, g, carrier_g)`` -> ``(dx, dkernel, dfeedback)``: ``g`` is the error
  at the layer's output (δ_l), ``carrier_g`` the output error δ_L when the rule uses a carrier.
- Receivers (``receives``, ``receiver_feedback_names``, ``init_receiver_feedback``,
  ``receiver_residuals``, ``receiver_backward``): what the rule does at the receiving
  points the wrapper places (``blocks=`` inputs, ``receivers=`` outputs; DFA's ``D·δ_L``).
  Defaults: no receivers (the wrapper then places none).
- ``transform()``: the parameter-side part as an ``optax.GradientTransformation`` applied
  to the tree ``{"params": ..., "feedback": ...}`` before the optimizer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import optax

from alearn._layers.ops import LinearOp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Rule:
    """Base learning rule; its defaults implement backpropagation (eqs. 2.1-2.3)."""

    name: ClassVar[str] = "bp"
    feedback_names: ClassVar[tuple[str, ...]] = ()
    trains_feedback: ClassVar[bool] = False
    needs_carrier: ClassVar[bool] = False
    receives: ClassVar[bool] = False
    receiver_feedback_names: ClassVar[tuple[str, ...]] = ()

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        raise NotImplementedError(f"rule {self.name!r} declares no feedback variable {name!r}")

    def draw_feedback(self, tape: Any, name: str, key: Array, op: LinearOp) -> Array:
        """Draws a layer's feedback variable ``name`` on ``tape`` (``init_feedback`` with
        the tape's number of output units; DFA also reads the output's shape)."""
        return self.init_feedback(name, key, op, tape.num_classes)

    def draw_receiver_feedback(self, tape: Any, name: str, key: Array, shape: tuple[int, ...],
                      dtype: Any) -> Array:
        """Draws receiver variable ``name`` for an activation of ``shape`` on ``tape``."""
        return self.init_receiver_feedback(name, key, shape, tape.num_classes, dtype)

    def layer_feedback_names(self, tape: Any, op: LinearOp) -> tuple[str, ...]:
        """The feedback variables of the layer about to run (``feedback_names`` here)."""
        del tape, op
        return self.feedback_names

    def init_receiver_feedback(self, name: str, key: Array, shape: tuple[int, ...],
                               num_classes: int, dtype: Any) -> Array:
        """Draws receiver feedback variable ``name`` for an activation of ``shape``."""
        del key, shape, num_classes, dtype
        raise NotImplementedError(f"rule {self.name!r} declares no receiver variable {name!r}")

    def receiver_residuals(self, h: Array, feedback: dict) -> Any:
        """What a receiver's backward keeps alive (default: nothing)."""
        del h, feedback
        return None

    def receiver_backward(self, res: Any, g: Array, carrier_g: Array | None
                          ) -> tuple[Array, dict]:
        """``(gradient sent down, feedback cotangents)`` at a receiver; default: pass ``g``."""
        del res, carrier_g
        return g, {}

    def on_block(self, tape: Any, x: Array) -> None:
        del tape, x

    def on_finish(self, tape: Any, logits: Array) -> Array:
        """Called by ``Tape.finish`` on the model output; returns the output to use."""
        del tape
        return logits

    def on_close(self, tape: Any) -> None:
        """Called once a trace is over (``Tape.close``: by ``Tape.finish``, and by the
        wrappers for rules not driven by the output), with every layer seen; a place to
        check the whole model (the sharing rules refuse a block size k it cannot use)."""
        del tape

    def context(self, tape: Any, x: Array, op: LinearOp) -> Any:
        del tape, x, op
        return None

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, feedback, ctx
        return (x, kernel)

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        x, kernel = res
        del carrier_g
        return op.input_grad(g, kernel), op.weight_grad(x, g), {}

    def transform(self) -> optax.GradientTransformation:
        return optax.identity()
