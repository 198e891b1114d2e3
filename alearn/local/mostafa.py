"""Local classifiers with fixed random weights (Mostafa, Ramesh & Cauwenberghs 2018)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax

from alearn._layers.ops import LinearOp
from alearn.local import _local_loss
from alearn.local.base import LocalRule
from alearn.rules import _checks, _feedback_init

Array = jax.Array


def _loss(h: Array, lc: Array, y: Array, max_features: int) -> Array:
    return _local_loss.cross_entropy(_local_loss.pool_features(h, max_features) @ lc, y)


@dataclasses.dataclass(frozen=True)
class LocalFixed(LocalRule):
    """Each hidden layer learns from a fixed random classifier at its output (Table 5.3 [51]).

    Optimises, for every hidden layer output h_l, the local cross-entropy
    ``CE(pool(h_l) M_l, y)`` with ``M_l`` fixed random (``feedback/LC``, never trained):
    the local error ``pool^T(M_l (softmax − y))`` is the exact gradient of that loss and is
    the only error layer l receives (see :mod:`alearn.local.base`). ``pool`` is average
    pooling to at most ``max_features`` values. The output layer learns from the global
    loss.

    Attributes:
      max_features: size cap of the pooled head input.
      feedback_init / feedback_scale: distribution of the fixed classifiers.
    """

    name = "local_fixed"
    feedback_names: ClassVar[tuple[str, ...]] = ("LC",)

    max_features: int = 2048
    feedback_init: str = "lecun_normal"
    feedback_scale: float = 1.0

    def __post_init__(self):
        _checks.positive_int(self.name, "max_features", self.max_features)
        _feedback_init.validate(self.name, self.feedback_init, self.feedback_scale)

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        if name != "LC":
            return super().init_feedback(name, key, op, num_classes)
        shape = (_local_loss.pooled_size(op.in_shape, self.max_features), num_classes)
        return _feedback_init.draw(key, shape, self.feedback_init, self.feedback_scale,
                                   op.dtype)

    def head_params(self, feedback: dict) -> Any:
        return jax.lax.stop_gradient(feedback["LC"])

    def head_loss(self):
        return functools.partial(_loss, max_features=self.max_features)
