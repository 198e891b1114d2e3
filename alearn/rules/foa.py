"""Forward Alignment, FoA (ASAP thesis eqs. 3.7-3.10, Sec. 3.2-3.3, Fig. 3.2)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp

from alearn._layers.ops import LinearOp
from alearn.rules import _feedback_init
from alearn.rules import dimension_matching as dm
from alearn.rules.base import Rule

Array = jax.Array

_H = "foa/h"


@dataclasses.dataclass(frozen=True)
class FoA(Rule):
    """Forward Alignment: exact feedback, updates from approximate activations.

    A second, linear forward path runs beside the network: ``h̃_0 = x`` and
    ``h̃_l = C_l h̃_{l-1}`` (eq. 3.8) with fixed random ``C_l`` of the kernel's shape
    (``feedback/C``, never trained). The error crosses layers exactly (``W_lᵀ``, eq. 3.9)
    and the update is ``ΔW_l = δ_l h̃_{l-1}ᵀ`` (eq. 3.10). The approximate path is purely
    linear as eq. 3.8 (no φ, no batch norm, no bias); where the network changes shape
    between layers (pooling, flatten) ``h̃`` is matched to the next layer's input with
    dimension-matching method ``match`` (1: max-pool, flatten when sizes agree). It is
    computed in the forward pass, travels in ``tape.state`` and receives no gradient.
    Residuals: (h̃_{l-1}, W).

    Attributes:
      feedback_init / feedback_scale: the distribution of C (as FA's B).
      match: dimension-matching method for shape changes between layers.
    """

    name = "foa"
    feedback_names: ClassVar[tuple[str, ...]] = ("C",)

    feedback_init: str = "lecun_normal"
    feedback_scale: float = 1.0
    match: int = 1

    def __post_init__(self):
        _feedback_init.validate(self.name, self.feedback_init, self.feedback_scale)
        dm.validate(self.name, self.match)

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        if name != "C":
            return super().init_feedback(name, key, op, num_classes)
        return _feedback_init.draw(key, op.kernel_shape, self.feedback_init,
                                   self.feedback_scale, op.dtype)

    def context(self, tape: Any, x: Array, op: LinearOp) -> Any:
        h = jax.lax.stop_gradient(tape.state.get(_H, x))
        if self.match == 3 and tuple(h.shape) != op.in_shape:
            raise ValueError("foa: match=3 has no projection of its own (C is the projection); "
                             "use match=1 or 2")
        h = dm.match(h, op.in_shape, self.match)
        tape.state[_H] = jax.lax.stop_gradient(op.apply(h, tape.feedback["C"]))
        return h

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, x, feedback
        return (ctx, kernel)

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        h, kernel = res
        del carrier_g
        return op.input_grad(g, kernel), op.weight_grad(h, g), {}


def alignment_angles(variables: Mapping) -> dict[str, Array]:
    """Angle in degrees between each layer's forward kernel W and its fixed C (Fig. 3.2).

    Returns ``{"/".join(module path): angle}`` for every module holding both ``params/
    kernel`` and ``feedback/C``; 0° means W ∝ C.
    """
    out = {}

    def walk(p: Any, f: Any, path: tuple) -> None:
        if not isinstance(p, Mapping) or not isinstance(f, Mapping):
            return
        if "kernel" in p and "C" in f:
            w, c = p["kernel"].ravel(), f["C"].ravel()
            cos = jnp.dot(w, c) / (jnp.linalg.norm(w) * jnp.linalg.norm(c) + 1e-30)
            out["/".join(path)] = jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))
        for k in p:
            if k in f:
                walk(p[k], f[k], path + (k,))

    walk(variables["params"], variables.get("feedback", {}), ())
    return out
