"""Activation Sharing in Feedback Path, ASFP (ASAP thesis eqs. 4.7-4.10, Fig. 4.6)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from alearn.layers.ops import LinearOp
from alearn.rules._sharing import AsymmetricSharingRule

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ASFP(AsymmetricSharingRule):
    """ASFP: W learns from its own input, B from the shared activation.

    Eqs. 4.7-4.10: ``ΔW_l = δ_l h_{l-1}ᵀ`` (pre-synaptic activity), ``ΔB_l = δ_l h̃_mᵀ``;
    the error crosses each layer through B (``φ' ⊙ B_lᵀ δ_l``). Decay λ on W and B as
    ASAP's (Algorithm 1; the thesis does not state a separate value). The first layer is
    not trained, as with ASAP. Since ΔW ≠ ΔB, W and B need not align: the thesis reports
    poor deep-network accuracy (Table 5.5), which ASFP+LC repairs.
    Residuals: (own input, shared activation, B); nothing but B for the first layer.

    Attributes:
      as :class:`alearn.rules.asap.ASAP`.
    """

    name = "asfp"

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, kernel
        if ctx[0] is None:  # untrained first layer: nothing of its input is needed
            x = None
        return (x, ctx, feedback["B"])

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        x, ctx, b = res
        del carrier_g
        h = self.matched(op, ctx)
        dx = op.input_grad(g, b)
        if h is None:  # untrained first layer
            zero = jnp.zeros(op.kernel_shape, g.dtype)
            return dx, zero, {"B": zero}
        return dx, op.weight_grad(x, g), {"B": op.weight_grad(h, g)}
