"""Activation Sharing with Asymmetric Paths, ASAP (ASAP thesis eqs. 4.5-4.6, Algorithm 1)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from alearn.layers.ops import LinearOp
from alearn.rules._sharing import AsymmetricSharingRule

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ASAP(AsymmetricSharingRule):
    """ASAP: feedback through learned ``B_l``; W and B get the same shared-activation update.

    Algorithm 1: ``δ_{m,k-1} = φ' ⊙ B_{m,k}ᵀ δ_{m,k}``; ``ΔW_{m,k} = δ_{m,k} h̃_mᵀ + λW``
    and ``ΔB_{m,k} = δ_{m,k} h̃_mᵀ + λB`` (gradient convention). Because the non-decay
    parts are equal, ``W − B`` shrinks by ``(1 − λ)`` per SGD step of rate 1 (Sec. 4.2.1
    theorem, Kolen-Pollack with shared activation). The decay is this rule's transform
    (:func:`alearn.rules._sharing.freeze_and_decay`): use base weight decay 0 with ASAP.

    The first rule-aware layer is not trained (Sec. 5.1.1): its kernel, bias and B updates
    are exactly zero. Residuals: (shared activation, B) only: the layer's own input and W
    are not kept for the backward pass, so a group of k layers keeps one activation.

    Attributes:
      k: block size (2 in the thesis, 4 studied); match: dimension-matching method
      (1 = tile + max-pool, the thesis default); seed: method 3's projection seed;
      decay: λ on W and B (5e-4); feedback_init / feedback_scale: initial B.
    """

    name = "asap"

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, x, kernel
        return (ctx, feedback["B"])

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        ctx, b = res
        del carrier_g
        h = self.matched(op, ctx)
        dx = op.input_grad(g, b)
        if h is None:  # untrained first layer
            zero = jnp.zeros(op.kernel_shape, g.dtype)
            return dx, zero, {"B": zero}
        dw = op.weight_grad(h, g)
        return dx, dw, {"B": dw}
