"""Direct feedback alignment (Nøkland 2016; ASAP thesis eq. 2.5)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from alearn._layers.ops import LinearOp
from alearn.rules import _checks, _feedback_init
from alearn.rules.base import Rule

Array = jax.Array


SEQUENCE = {
    "positionwise": "one D per layer shared over the positions between batch and features "
                    "(Launay et al. 2020): D is (output features, layer features)",
    "flatten": "D maps the whole flattened output to the whole flattened layer input",
}


def _project(error: Array, d: Array, shape: tuple[int, ...], dtype: Any) -> Array:
    """``δ_L D`` reshaped to an activation of ``shape`` (batch first).

    ``error`` is δ_L, (batch, *output shape) or flattened (batch, K). A D with K rows maps
    the flattened output; a D with fewer rows (the output's feature count) is position-wise:
    each position's error e[b, t, :] is projected by the same D.
    """
    batch = error.shape[0]
    if d.shape[0] == math.prod(error.shape[1:]):
        out = jnp.dot(error.reshape(batch, -1).astype(d.dtype), d)
    else:
        out = jnp.dot(error.reshape(batch, -1, d.shape[0]).astype(d.dtype), d)
    return out.reshape(shape).astype(dtype)


def feedback_shape(in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                   sequence: str = "positionwise") -> tuple[int, int]:
    """D's shape for an activation ``in_shape`` (batch first) and an output ``out_shape``
    (without batch): position-wise where the activation shares the output's position axes."""
    positions = tuple(out_shape[:-1])
    if (sequence == "positionwise" and positions
            and tuple(in_shape[1:1 + len(positions)]) == positions
            and len(in_shape) > 1 + len(positions)):
        return (out_shape[-1], math.prod(in_shape[1 + len(positions):]))
    return (math.prod(out_shape), math.prod(in_shape[1:]))


@dataclasses.dataclass(frozen=True)
class DFA(Rule):
    """Direct feedback alignment: the output error reaches every layer through a fixed D.

    Eq. 2.5: ``δ_l = φ'(a_l) ⊙ (D_l δ_L)``, ``ΔW_l = δ_l h_{l-1}ᵀ``. The signal ``δ_L D`` is
    delivered at *receiving points* that replace whatever gradient arrives from above:

    - every routed layer owns ``feedback/D`` sized to its *input* and sends
      ``reshape(δ_L D)`` there instead of ``W_jᵀ δ_j`` (on a plain chain a layer's input
      is the previous activation, after pooling/flattening); where one array feeds several
      layers only the first sends, and a layer reading the model input owns none;
    - receivers the wrapper places at declared block inputs (``blocks=``) and module
      outputs (``receivers=``), as the ASAP authors' ``Feedback_Receiver``: each owns
      ``feedback/D`` (``D_out`` on an output) of shape (classes, prod(h shape without
      batch)), replaces *all* the gradient arriving there by ``reshape(δ_L D)``, and the
      layers reading its output own no D, so no gradient leaks through residual shortcuts.

    The activation (BN, pooling) between a receiver and the layer below supplies φ' by
    ordinary autodiff. The first layer's input error is discarded. ``W_jᵀ δ_j`` is never
    computed and W is not kept alive.

    Outputs with axes between batch and features (a language model's (batch, T, V)
    logits): by default each position's error is projected by one D shared over the
    positions, D of shape (V, layer features) for an activation (batch, T, ...) — the form
    of Launay et al. 2020 for Transformers, memory linear in the width; ``sequence=
    "flatten"`` maps the whole flattened output instead ((T·V) × (T·d) per layer).

    Attributes:
      feedback_init: initialiser family of D with fan-in = number of classes;
        "normal_fan_in" = N(0, 1/classes), the authors' code (default).
      feedback_scale: multiplier on the drawn D (> 0).
      sequence: "positionwise" (default) or "flatten" (see above).

    As FA, with a loss whose outputs are pinned by the targets (one-hot MSE) DFA needs the
    output layer's kernel to start small (×0.1 after ``alearn.init``): MLP 256-256, Adam
    1e-3, 5 epochs: 0.298 with the He-normal classifier, 0.934 with it ×0.1
    (docs/notes/rules_wt.md, "FA with an MSE loss").
    """

    name = "dfa"
    feedback_names = ("D",)
    needs_carrier = True
    receives = True
    receiver_feedback_names = ("D",)

    feedback_init: str = "normal_fan_in"
    feedback_scale: float = 1.0
    sequence: str = "positionwise"

    def __post_init__(self):
        _feedback_init.validate(self.name, self.feedback_init, self.feedback_scale)
        _checks.choice(self.name, "sequence", self.sequence, SEQUENCE)

    def _draw(self, key: Array, shape: tuple[int, ...], out_shape: tuple[int, ...],
              dtype: Any) -> Array:
        return _feedback_init.draw(key, feedback_shape(shape, out_shape, self.sequence),
                                   self.feedback_init, self.feedback_scale, dtype,
                                   in_axis=0, out_axis=1)

    def layer_feedback_names(self, tape: Any, op: LinearOp) -> tuple[str, ...]:
        del op
        return () if tape.input_received else ("D",)

    def draw_feedback(self, tape: Any, name: str, key: Array, op: LinearOp) -> Array:
        if name != "D":
            return super().draw_feedback(tape, name, key, op)
        return self._draw(key, op.in_shape, tape.out_shape, op.dtype)

    def draw_receiver_feedback(self, tape: Any, name: str, key: Array, shape: tuple[int, ...],
                      dtype: Any) -> Array:
        if name != "D":
            return super().draw_receiver_feedback(tape, name, key, shape, dtype)
        return self._draw(key, shape, tape.out_shape, dtype)

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        if name != "D":
            return super().init_feedback(name, key, op, num_classes)
        return self._draw(key, op.in_shape, (num_classes,), op.dtype)

    def init_receiver_feedback(self, name: str, key: Array, shape: tuple[int, ...],
                               num_classes: int, dtype: Any) -> Array:
        if name != "D":
            return super().init_receiver_feedback(name, key, shape, num_classes, dtype)
        return self._draw(key, shape, (num_classes,), dtype)

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, kernel, ctx
        return (x, feedback.get("D"))

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        x, d = res
        if carrier_g is None:
            raise ValueError("DFA needs the tape's carrier (rule.needs_carrier must be True)")
        if d is None:  # the model's receivers deliver δ_L D; nothing passes through layers
            dx = jnp.zeros_like(x)
        else:
            dx = _project(carrier_g, d, x.shape, x.dtype)
        return dx, op.weight_grad(x, g), {}

    def receiver_residuals(self, h: Array, feedback: dict) -> Any:
        del h
        return feedback["D"]

    def receiver_backward(self, res: Any, g: Array, carrier_g: Array | None):
        if carrier_g is None:
            raise ValueError("DFA needs the tape's carrier (rule.needs_carrier must be True)")
        return _project(carrier_g, res, g.shape, g.dtype), {}
