"""Activation Sharing with weight transport, AS (ASAP thesis eqs. 4.1-4.4, Fig. 4.2)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from alearn.layers.ops import LinearOp
from alearn.rules._sharing import SharingRule

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AS(SharingRule):
    """Activation Sharing: exact feedback ``W_lᵀ``, update ``δ_l h̃_mᵀ`` (eqs. 4.3-4.4).

    Forward Alignment with ``C = I`` inside blocks of ``k`` layers: every layer of group m
    forms its update with the group's shared activation ``h̃_m`` (grouping in
    ``_sharing.py``). The error still crosses each layer through the forward weights
    (weight transport), so AS isolates the effect of sharing; with ``k = 1`` every layer
    uses its own input and AS is exactly BP (layer 0 is trained with its own input).
    Residuals: (shared activation, W).

    Attributes:
      k: block size; match: dimension-matching method; seed: method 3's projection seed.
    """

    name = "as"
    train_first: ClassVar[bool] = True

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, x, feedback
        return (ctx, kernel)

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        ctx, kernel = res
        del carrier_g
        return op.input_grad(g, kernel), op.weight_grad(self.matched(op, ctx), g), {}
