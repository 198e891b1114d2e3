"""Modified Kolen–Pollack (Akrout et al. 2019; ASAP thesis eq. 2.7, Sec. 4.2.1)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import optax
from flax import traverse_util

from alearn.layers.ops import LinearOp
from alearn.rules import _checks
from alearn.rules._pairs import kernel_path
from alearn.rules.fa import FA

Array = jax.Array


class KPDecayState(NamedTuple):
    """Stateless transformation (kept as a NamedTuple for the house convention)."""


def kp_decay(weight_decay: float, decay_kernel: bool = False) -> optax.GradientTransformation:
    """Adds ``λ B`` to feedback updates and (optionally) ``λ W`` to the matching kernels.

    Applied to the tree ``{"params": ..., "feedback": ...}`` (``alearn.trainable``).
    A kernel decays only if its layer owns a feedback ``B`` (the pair of eq. 2.7); biases
    and other parameters are left to the base optimizer's weight decay. With identical
    updates for W and B (``KP.backward``) and lr η, ``W − B`` shrinks by ``(1 − ηλ)`` per
    SGD step (Kolen–Pollack theorem, thesis Sec. 4.2.1).

    Args:
      weight_decay: λ >= 0.
      decay_kernel: also decay the paired kernels. Leave False when the base optimizer
        applies the weight decay λ to the params (the papers' SGD; W would decay twice);
        set True with a base optimizer without weight decay.
    """

    def init_fn(params):
        del params
        return KPDecayState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("kp_decay needs params: call update(updates, state, params)")
        if "feedback" not in updates or weight_decay == 0:
            return updates, state
        new = dict(updates)
        new["feedback"] = jax.tree_util.tree_map(
            lambda u, b: u + weight_decay * b, updates["feedback"], params["feedback"])
        if decay_kernel:
            fb = traverse_util.flatten_dict(params["feedback"])
            flat_u = traverse_util.flatten_dict(updates["params"])
            flat_p = traverse_util.flatten_dict(params["params"])
            for b_path in fb:
                path = kernel_path(flat_p, b_path) if b_path[-1] == "B" else None
                if path is not None:
                    flat_u[path] = flat_u[path] + weight_decay * flat_p[path]
            new["params"] = traverse_util.unflatten_dict(flat_u)
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class KP(FA):
    """Kolen–Pollack: FA's feedback path, and B receives exactly W's update.

    ``ΔB_l = ΔW_l = −η δ_l h_{l-1}ᵀ`` (eq. 2.7) plus weight decay λ on both, so
    ``W − B = (1 − ηλ)^t (W_0 − B_0) → 0``. By default :meth:`transform`
    (:func:`kp_decay`) decays B only and W's decay is the base optimizer's weight decay λ
    (the papers' setup: SGD weight decay 5e-4 on every forward parameter); with a base
    optimizer without weight decay set ``decay_kernel=True``. The trainer rejects the
    combinations that decay W or B twice, or W and B by different amounts
    (:meth:`check_base_weight_decay`). With SGD the trainer's optimizer
    (``optimizer_from_config``) applies B's update in W's pass, without a momentum buffer
    for B (:mod:`alearn.train.kp_sgd`, equal up to float32 rounding).

    Attributes:
      weight_decay: λ (paper: 5e-4, the global weight decay of Sec. 5.1).
      decay_kernel: whether ``transform`` also decays the kernels (default False: the base
        optimizer does; see :func:`kp_decay`).
    """

    name = "kp"
    trains_feedback = True

    weight_decay: float = 5e-4
    decay_kernel: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.paper_code_fa_conv:
            raise ValueError("rule 'kp': paper_code_fa_conv=True is a switch of rule 'fa' only "
                             "(the authors' FA conv aliasing); KP trains its own B")
        _checks.non_negative(self.name, "weight_decay", self.weight_decay)
        if not isinstance(self.decay_kernel, bool):
            raise ValueError(f"rule 'kp': decay_kernel={self.decay_kernel!r} must be a bool")

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        x, b = res
        del carrier_g
        dw = op.weight_grad(x, g)
        return op.input_grad(g, b), dw, {"B": dw}

    def transform(self) -> optax.GradientTransformation:
        return kp_decay(self.weight_decay, self.decay_kernel)

    def check_base_weight_decay(self, weight_decay: float, decays_feedback: bool) -> None:
        """Checks KP against a base optimizer with weight decay ``weight_decay`` on the
        params (and on the feedback B too when ``decays_feedback``).

        Raises:
          ValueError: W or B would decay twice, or W and B by different amounts (then
            ``W − B`` does not shrink to 0, Kolen–Pollack theorem, Sec. 4.2.1).
        """
        base = float(weight_decay)
        if self.decay_kernel and base > 0:
            raise ValueError(
                f"rule 'kp' with decay_kernel=True and the optimizer's weight_decay={base:g} "
                "decays W twice; set rule_hparams.decay_kernel=False (the optimizer then "
                "decays W) or weight_decay=0")
        if decays_feedback and base > 0 and self.weight_decay > 0:
            raise ValueError(
                f"rule 'kp' with weight_decay={self.weight_decay:g} and the optimizer's "
                f"weight_decay={base:g} on all parameters (weight_decay_mask='all') decays B "
                "twice; set rule_hparams.weight_decay=0 or weight_decay_mask='params'")
        w = base + (self.weight_decay if self.decay_kernel else 0.0)
        b = (base if decays_feedback else 0.0) + self.weight_decay
        if abs(w - b) > 1e-12 * max(1.0, abs(w), abs(b)):
            raise ValueError(
                f"rule 'kp': W decays by {w:g} per step but B by {b:g} (optimizer "
                f"weight_decay={base:g}, rule weight_decay={self.weight_decay:g}, "
                f"decay_kernel={self.decay_kernel}), so W − B does not shrink to 0; give "
                "both the same λ: optimizer weight_decay=λ with rule_hparams.weight_decay=λ, "
                "or optimizer weight_decay=0 with decay_kernel=True")
