"""Activation Sharing with weight transport, AS (ASAP thesis eqs. 4.1-4.4, Fig. 4.2)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from alearn._layers.ops import LinearOp
from alearn.rules._sharing import SharingRule

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AS(SharingRule):
    """Activation Sharing: exact feedback ``W_lᵀ``, update ``δ_l h̃_mᵀ`` (eqs. 4.3-4.4).

    Forward Alignment with ``C = I`` inside groups of ``k`` layers: every sharing layer forms
    its update with its shared activation ``h̃_m`` (grouping in ``_sharing.py``). The error
    still crosses each layer through the forward weights (weight transport), so AS
    isolates the effect of sharing. With ``grouping="authors_code"`` (the default, the
    authors' ``--wt`` mode) the first layer is frozen; with ``"block_input"`` it is trained
    with its own input, and ``k = 1`` is then exactly BP. Dense layers keep their own input
    (exact BP) by default (``dense="own_input"``; the authors' ``--wt`` mode trains them by
    FA instead, which would need feedback weights AS does not have) or share
    (``dense="shared"``). Weight decay: the rule's own ``decay`` (default 0), with
    ``decay_scope`` ``"kernels"`` or ``"all"`` (the authors' ``--wt`` runs decay every
    trained parameter by 5e-4, which ``experiments/configs/asap.py`` sets); a base optimizer
    decay would also shrink the frozen first layer.
    Residuals: (shared activation, W).

    Attributes:
      k, match, seed, grouping, dense, decay, decay_scope: as
        :class:`alearn.rules._sharing.SharingRule`.
    """

    name = "as"
    trains_feedback: ClassVar[bool] = True  # the frozen marker must reach the transform
    dense_choices: ClassVar[tuple[str, ...]] = ("own_input", "shared")

    dense: str = "own_input"

    def freezes_first(self) -> bool:
        return self.grouping == "authors_code"

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, x, feedback
        return (ctx, kernel)

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        ctx, kernel = res
        del carrier_g
        if ctx is None:
            return self.frozen_backward(op, g)
        return op.input_grad(g, kernel), op.weight_grad(self.matched(op, ctx), g), {}
