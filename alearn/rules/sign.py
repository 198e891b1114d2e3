"""Sign symmetry (Liao et al. 2016; Xiao et al. 2019, thesis ref. [17])."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from alearn._layers import initializers
from alearn._layers.ops import LinearOp
from alearn.rules import _checks
from alearn.rules.base import Rule

Array = jax.Array

MAGNITUDES = ("fan_in", "mean_abs", "unit")


def sign_feedback(kernel: Array, magnitude: str = "fan_in", fan_in: int | None = None
                  ) -> Array:
    """The feedback matrix of sign symmetry: ``sign(W)`` times a per-layer magnitude.

    ``"fan_in"`` (default): ±sqrt(2 / fan_in), the std of a He-initialised W (a fixed
    scale); ``fan_in`` is the map's true fan-in (``op.fans[0]``: e.g. heads * head_dim for
    an attention out-projection (heads, head_dim, d)), by default that of a dense (in, out)
    or conv HWIO kernel of this shape; ``"mean_abs"``: ±mean|W| of the layer (tracks W's
    scale); ``"unit"``: the papers' ±1 (Xiao et al.), which multiplies the error by about sqrt(fan) per layer.
    Measured on a LeNet-5 without BatchNorm, mnist5k, SGD lr 0.01, 10 epochs
    (docs/notes/rules_wt.md): fan_in 0.944, mean_abs 0.892, unit 0.100 (diverges), BP
    0.925. ``"unit"`` and ``"mean_abs"`` equal W when every weight is ±1.
    """
    s = jnp.sign(kernel)
    if magnitude == "mean_abs":
        s = s * jnp.mean(jnp.abs(kernel))
    elif magnitude == "fan_in":
        fan = initializers.fans(kernel.shape)[0] if fan_in is None else fan_in
        s = s * jnp.asarray(math.sqrt(2.0 / fan), s.dtype)
    elif magnitude != "unit":
        raise ValueError(f"unknown sign magnitude {magnitude!r}; choose one of: "
                         f"{', '.join(MAGNITUDES)}")
    return s


@dataclasses.dataclass(frozen=True)
class SignSymmetry(Rule):
    """Sign-concordant feedback: ``δ_{l-1} = φ'(a_{l-1}) ⊙ sign(W_l)ᵀ δ_l``.

    Only the signs of the forward weights are transported; the update is BP's
    ``δ_l h_{l-1}ᵀ``. No feedback variables.

    Attributes:
      magnitude: "fan_in" (±sqrt(2/fan_in), default), "mean_abs" (±mean|W_l|) or "unit"
        (±1, Xiao et al.); see :func:`sign_feedback`.
    """

    name = "sign"

    magnitude: str = "fan_in"

    def __post_init__(self):
        _checks.choice(self.name, "magnitude", self.magnitude, MAGNITUDES)

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del feedback, ctx
        return (x, sign_feedback(kernel, self.magnitude, op.fans[0]))

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        x, s = res
        del carrier_g
        return op.input_grad(g, s), op.weight_grad(x, g), {}
