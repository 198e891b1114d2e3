"""Activation Sharing with Asymmetric Paths, ASAP (ASAP thesis eqs. 4.5-4.6, Algorithm 1)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from alearn._layers.ops import LinearOp
from alearn.rules._sharing import B_FIXED, FROZEN, AsymmetricSharingRule

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ASAP(AsymmetricSharingRule):
    """ASAP: feedback through learned ``B_l``; W and B get the same shared-activation update.

    Algorithm 1: ``δ_{m,k-1} = φ' ⊙ B_{m,k}ᵀ δ_{m,k}``; ``ΔW_{m,k} = δ_{m,k} h̃_mᵀ + λW``
    and ``ΔB_{m,k} = δ_{m,k} h̃_mᵀ + λB`` (gradient convention). Because the non-decay
    parts are equal, ``W − B`` shrinks by ``(1 − λ)`` per SGD step of rate 1 (Sec. 4.2.1
    theorem, Kolen-Pollack with shared activation). The decay is this rule's transform
    (:func:`alearn.rules._sharing.freeze_and_decay`): use base weight decay 0 with ASAP.
    ``decay_scope="kernels"`` (default) decays W and B as Algorithm 1; ``"all"`` also
    biases and BatchNorm scale/shift, as the authors' code (torch SGD weight decay over
    every parameter), which ``experiments/configs/asap.py`` sets.

    Which shared activation a layer uses: ``grouping`` (default ``"authors_code"``, the
    authors' released code). The first rule-aware layer is declared frozen (Sec. 5.1.1);
    dense layers train by plain FA with a fixed uniform(-1, 1) B by default (``dense``).
    Residuals: (shared activation, B) only: the layer's own input and W are not kept for
    the backward pass; a dense FA layer keeps (own input, B_fixed).

    Attributes:
      k: block size (2 in the thesis, 4 studied); match: dimension-matching method
      (1 = tile + max-pool, the thesis default); seed: method 3's projection seed;
      grouping / dense: see ``_sharing.py``; decay: λ on W and B (5e-4);
      decay_scope: "kernels" (W and B) or "all" (every trained parameter);
      feedback_init / feedback_scale: initial B.
    """

    name = "asap"

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, kernel
        if FROZEN in feedback:
            return None
        if B_FIXED in feedback:
            return {"x": x, B_FIXED: feedback[B_FIXED]}
        return {"ctx": ctx, "B": feedback["B"]}

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        del carrier_g
        if res is None:
            return self.frozen_backward(op, g)
        if B_FIXED in res:
            return self.fa_backward(op, res["x"], res[B_FIXED], g)
        dw = op.weight_grad(self.matched(op, res["ctx"]), g)
        return op.input_grad(g, res["B"]), dw, {"B": dw}
