"""Initialisers for fixed or learned feedback weights (FA, DFA, KP, WM).

Feedback weights are drawn from the key that ``Rule.init_feedback`` receives (the layer's
own ``"params"`` RNG under the feedback variable's name), never copied from the forward
kernel: FA's B and W are independent draws from the same family of distributions.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from alearn.layers import initializers
from alearn.rules import _checks

Array = jax.Array

# name -> (variance scale, fan mode, distribution), as in jax.nn.initializers; the last two
# are the ASAP authors' feedback initialisations (code/building_blocks.py):
# - "normal_fan_in": N(0, 1/fan_in), untruncated; for DFA's D fan_in = classes, i.e. the
#   authors' Feedback_Receiver ``normal_(std=sqrt(1/connect_features))``;
# - "uniform_unit": U(-1, 1) whatever the shape, the authors' Linear_FA ``weight_fa``.
INITS = {
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "normal_fan_in": (1.0, "fan_in", "normal"),
    "uniform_unit": None,
}


def validate(rule: str, init: str, scale: float) -> None:
    """Checks an (init name, scale) pair; raises ``ValueError`` naming the bad field."""
    _checks.choice(rule, "feedback_init", init, INITS)
    _checks.positive(rule, "feedback_scale", scale)


def draw(key: Array, shape: Sequence[int], init: str, scale: float, dtype: Any = jnp.float32,
         in_axis: int = -2, out_axis: int = -1) -> Array:
    """Draws feedback weights of ``shape`` from initialiser ``init``, times ``scale``.

    The default axes treat ``shape`` like a forward kernel (dense (in, out) or conv HWIO),
    so B has the same distribution as a kernel initialised with ``init``.
    """
    if INITS[init] is None:  # uniform_unit
        flat = jax.random.uniform(key, (math.prod(tuple(shape)),), dtype, -1.0, 1.0)
        return scale * flat.reshape(tuple(shape))
    var, mode, dist = INITS[init]
    fn = initializers.variance_scaling(var, mode, dist, in_axis=in_axis, out_axis=out_axis)
    return scale * fn(key, tuple(shape), dtype)
