"""Modified Kolen–Pollack (Akrout et al. 2019; ASAP thesis eq. 2.7, Sec. 4.2.1)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import optax
from flax import traverse_util

from alearn.layers.ops import LinearOp
from alearn.rules import _checks
from alearn.rules.fa import FA

Array = jax.Array


class KPDecayState(NamedTuple):
    """Stateless transformation (kept as a NamedTuple for the house convention)."""


def kp_decay(weight_decay: float, decay_kernel: bool = True) -> optax.GradientTransformation:
    """Adds ``λ B`` to feedback updates and (optionally) ``λ W`` to the matching kernels.

    Applied to the tree ``{"params": ..., "feedback": ...}`` (``alearn.trainable``).
    A kernel decays only if its layer owns a feedback ``B`` (the pair of eq. 2.7); biases
    and other parameters are left to the base optimizer's weight decay. With identical
    updates for W and B (``KP.backward``) and lr η, ``W − B`` shrinks by ``(1 − ηλ)`` per
    SGD step (Kolen–Pollack theorem, thesis Sec. 4.2.1).

    Args:
      weight_decay: λ >= 0.
      decay_kernel: also decay the paired kernels. Set False when the base optimizer
        already applies the same weight decay λ to the params (avoids decaying W twice).
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
            layers = {path[:-1] for path in fb if path[-1] == "B"}
            flat_u = traverse_util.flatten_dict(updates["params"])
            flat_p = traverse_util.flatten_dict(params["params"])
            for path in flat_u:
                if path[-1] == "kernel" and path[:-1] in layers:
                    flat_u[path] = flat_u[path] + weight_decay * flat_p[path]
            new["params"] = traverse_util.unflatten_dict(flat_u)
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class KP(FA):
    """Kolen–Pollack: FA's feedback path, and B receives exactly W's update.

    ``ΔB_l = ΔW_l = −η δ_l h_{l-1}ᵀ`` (eq. 2.7) plus weight decay λ on both, applied by
    :meth:`transform` (:func:`kp_decay`), so ``W − B = (1 − ηλ)^t (W_0 − B_0) → 0``.

    Attributes:
      weight_decay: λ (paper: 5e-4, the global weight decay of Sec. 5.1).
      decay_kernel: whether ``transform`` also decays the kernels (see :func:`kp_decay`).
    """

    name = "kp"
    trains_feedback = True

    weight_decay: float = 5e-4
    decay_kernel: bool = True

    def __post_init__(self):
        super().__post_init__()
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
