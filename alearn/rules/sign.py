"""Sign symmetry (Liao et al. 2016; Xiao et al. 2019, thesis ref. [17])."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from alearn.layers.ops import LinearOp
from alearn.rules import _checks
from alearn.rules.base import Rule

Array = jax.Array

MAGNITUDES = ("unit", "mean_abs")


def sign_feedback(kernel: Array, magnitude: str = "unit") -> Array:
    """The feedback matrix of sign symmetry: ``sign(W)``, optionally rescaled.

    ``"unit"`` is the papers' ±1 feedback; ``"mean_abs"`` multiplies it by mean|W| of the
    layer, so the error keeps roughly BP's scale in nets without normalisation layers.
    Both equal W exactly when every weight is ±1.
    """
    s = jnp.sign(kernel)
    if magnitude == "mean_abs":
        s = s * jnp.mean(jnp.abs(kernel))
    return s


@dataclasses.dataclass(frozen=True)
class SignSymmetry(Rule):
    """Sign-concordant feedback: ``δ_{l-1} = φ'(a_{l-1}) ⊙ sign(W_l)ᵀ δ_l``.

    Only the signs of the forward weights are transported; the update is BP's
    ``δ_l h_{l-1}ᵀ``. No feedback variables.

    Attributes:
      magnitude: "unit" (±1, Xiao et al.) or "mean_abs" (±mean|W_l|).
    """

    name = "sign"

    magnitude: str = "unit"

    def __post_init__(self):
        _checks.choice(self.name, "magnitude", self.magnitude, MAGNITUDES)

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, feedback, ctx
        return (x, sign_feedback(kernel, self.magnitude))

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        x, s = res
        del carrier_g
        return op.input_grad(g, s), op.weight_grad(x, g), {}
