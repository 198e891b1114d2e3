"""Direct feedback alignment (Nøkland 2016; ASAP thesis eq. 2.5)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from alearn.layers.ops import LinearOp
from alearn.rules import _feedback_init
from alearn.rules.base import Rule

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class DFA(Rule):
    """Direct feedback alignment: the output error reaches every layer through a fixed D.

    Eq. 2.5: ``δ_l = φ'(a_l) ⊙ (D_l δ_L)``, ``ΔW_l = δ_l h_{l-1}ᵀ``. On the tape, layer j
    owns ``feedback/D`` of shape (classes, prod(input shape without batch)) and its
    backward sends ``reshape(δ_L D)`` to its input instead of ``W_jᵀ δ_j``; the activation
    (and pooling, normalisation) between layers supplies φ' by ordinary autodiff. So the
    thesis' D_l is the D of layer l+1; the output layer is no exception (its input gets
    ``δ_L D``), and the first layer's input error is discarded. Convolutions project to
    the flattened input shape. ``W_jᵀ δ_j`` is never computed and W is not kept alive.

    Attributes:
      feedback_init: initialiser family of D, with fan-in = number of classes.
      feedback_scale: multiplier on the drawn D (> 0).
    """

    name = "dfa"
    feedback_names = ("D",)
    needs_carrier = True

    feedback_init: str = "he_normal"
    feedback_scale: float = 1.0

    def __post_init__(self):
        _feedback_init.validate(self.name, self.feedback_init, self.feedback_scale)

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        if name != "D":
            return super().init_feedback(name, key, op, num_classes)
        shape = (num_classes, math.prod(op.in_shape[1:]))
        return _feedback_init.draw(key, shape, self.feedback_init, self.feedback_scale,
                                   op.dtype, in_axis=0, out_axis=1)

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, kernel, ctx
        return (x, feedback["D"])

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        x, d = res
        if carrier_g is None:
            raise ValueError("DFA needs the tape's carrier (rule.needs_carrier must be True)")
        dx = jnp.dot(carrier_g.astype(d.dtype), d).reshape(x.shape).astype(x.dtype)
        return dx, op.weight_grad(x, g), {}
