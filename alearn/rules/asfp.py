"""Activation Sharing in Feedback Path, ASFP (ASAP thesis eqs. 4.7-4.10, Fig. 4.6)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from alearn._layers.ops import LinearOp
from alearn.rules._sharing import B_FIXED, FROZEN, AsymmetricSharingRule

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ASFP(AsymmetricSharingRule):
    """ASFP: W learns from its own input, B from the shared activation.

    Eqs. 4.7-4.10: ``ΔW_l = δ_l h_{l-1}ᵀ`` (pre-synaptic activity), ``ΔB_l = δ_l h̃_mᵀ``;
    the error crosses each layer through B (``φ' ⊙ B_lᵀ δ_l``). Decay λ on W and B as
    ASAP's (Algorithm 1; the thesis does not state a separate value). Grouping, the frozen
    first layer and the dense FA layers as ASAP's (the authors' code has no ASFP; it gets
    ASAP's choices). Since ΔW ≠ ΔB, W and B need not align: the thesis reports poor
    deep-network accuracy (Table 5.5), which ASFP+LC repairs.
    Residuals: (own input, shared activation, B); nothing for the frozen first layer.

    Attributes:
      as :class:`alearn.rules.asap.ASAP`.
    """

    name = "asfp"

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, kernel
        if FROZEN in feedback:
            return None
        if B_FIXED in feedback:
            return {"x": x, B_FIXED: feedback[B_FIXED]}
        return {"x": x, "ctx": ctx, "B": feedback["B"]}

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        del carrier_g
        if res is None:
            return self.frozen_backward(op, g)
        if B_FIXED in res:
            return self.fa_backward(op, res["x"], res[B_FIXED], g)
        db = op.weight_grad(self.matched(op, res["ctx"]), g)
        return op.input_grad(g, res["B"]), op.weight_grad(res["x"], g), {"B": db}
