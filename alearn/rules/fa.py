"""Feedback alignment (Lillicrap et al. 2016; ASAP thesis eq. 2.4)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from alearn._layers.ops import ConvOp, LinearOp
from alearn.rules import _feedback_init
from alearn.rules.base import Rule

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FA(Rule):
    """Feedback alignment: the error crosses layer l through a fixed random B_l.

    Eq. 2.4: ``δ_{l-1} = φ'(a_{l-1}) ⊙ B_lᵀ δ_l`` and ``ΔW_l = δ_l h_{l-1}ᵀ``. Each
    rule-aware layer owns ``feedback/B`` with the kernel's shape, drawn from its own key
    with ``feedback_init`` (a ``jax.nn.initializers`` variance-scaling family) times
    ``feedback_scale``, for the kernel's true fans (``op.kernel_in_axes`` etc.: a
    DenseGeneral or ``Embed.attend`` kernel is drawn as the equivalent dense one). The
    backward pass keeps only (x, B) alive, never W.

    Attributes:
      feedback_init: initialiser family of B (see ``_feedback_init.INITS``; the authors'
        code draws FC layers' B from "uniform_unit", U(−1, 1)).
      feedback_scale: multiplier on the drawn B (> 0).
      paper_code_fa_conv: comparison only, off by default. Reproduces the ASAP authors'
        ``Conv2d_FA``, whose feedback weight is the forward weight tensor itself
        (aliasing): convolutions then send the error down through W, i.e. train by exact
        BP, while dense layers keep their random B. Use it to see how much of the papers'
        FA conv results comes from that aliasing (docs/notes/rules_wt.md).

    With a loss whose outputs are pinned by the targets (one-hot MSE), start the output
    layer's kernel small (e.g. ×0.1 after ``alearn.init``): FA aligns the top W with B only
    when W's learned part outgrows its random initial part, and a He-normal classifier is
    already as large as the outputs MSE asks for. Measured (MLP 256-256, Adam 1e-3, 5
    epochs): 0.179 test accuracy with the He-normal classifier, 0.926 with it ×0.1, BP
    0.945; feedback_scale does not help under Adam (docs/notes/rules_wt.md, "FA with an
    MSE loss"). Cross-entropy needs nothing.
    """

    name = "fa"
    feedback_names = ("B",)

    feedback_init: str = "he_normal"
    feedback_scale: float = 1.0
    paper_code_fa_conv: bool = False

    def __post_init__(self):
        _feedback_init.validate(self.name, self.feedback_init, self.feedback_scale)
        if not isinstance(self.paper_code_fa_conv, bool):
            raise ValueError(f"rule {self.name!r}: paper_code_fa_conv="
                             f"{self.paper_code_fa_conv!r} must be a bool")

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        del num_classes
        if name != "B":
            return super().init_feedback(name, key, op, 0)
        return _feedback_init.draw_like(key, op, self.feedback_init, self.feedback_scale)

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del ctx
        if self.paper_code_fa_conv and isinstance(op, ConvOp):
            return (x, kernel)  # the authors' aliasing: conv feedback = W (BP)
        return (x, feedback["B"])

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        x, b = res
        del carrier_g
        return op.input_grad(g, b), op.weight_grad(x, g), {}
