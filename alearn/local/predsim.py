"""Prediction + similarity-matching local losses, "predsim" (Nøkland & Eidnes 2019)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from alearn._layers.ops import LinearOp
from alearn.local import _local_loss
from alearn.local.base import LocalRule
from alearn.rules import _checks, _feedback_init

Array = jax.Array


def _cosine(a: Array) -> Array:
    """Cosine-similarity matrix of the rows of ``a`` (batch x batch)."""
    a = a - a.mean(axis=1, keepdims=True)
    a = a / (jnp.linalg.norm(a, axis=1, keepdims=True) + 1e-8)
    return a @ a.T


def _loss(h: Array, params: tuple, y: Array, max_features: int, beta: float) -> Array:
    lc, sim = params
    f = _local_loss.pool_features(h, max_features)
    pred = _local_loss.cross_entropy(f @ lc, y)
    similarity = jnp.mean((_cosine(f @ sim) - _cosine(y)) ** 2)  # ‖S(h W) − S(Y)‖² / n²
    return (1.0 - beta) * pred + beta * similarity


@dataclasses.dataclass(frozen=True)
class PredSim(LocalRule):
    """Each hidden layer learns from ``(1−β) pred + β sim`` at its output (Table 5.3 [43]).

    ``pred`` is the cross-entropy of a learned linear classifier on the pooled output
    (``feedback/LC``); ``sim`` is the mean squared difference between the batch's
    cosine-similarity matrix of a learned projection of the pooled output
    (``feedback/SIM``, ``sim_features`` wide) and ``S(Y)``, the same adjusted cosine
    similarity of the one-hot labels (1 within a class, −1/(C−1) across; the paper's
    L_sim and the authors' ``similarity_matrix(y_onehot)``, not ``Y Yᵀ``). Both heads
    train by their exact local gradients; no error crosses a layer. Simplification of the
    paper: the similarity branch is a learned linear map of the (average-pooled) output
    instead of a 3x3 convolution followed by pooling and standardisation.

    Attributes:
      beta: weight of the similarity loss (0.99 in the paper).
      max_features: size cap of the pooled head input.
      sim_features: width of the similarity projection.
    """

    name = "predsim"
    feedback_names: ClassVar[tuple[str, ...]] = ("LC", "SIM")
    trains_feedback: ClassVar[bool] = True

    beta: float = 0.99
    max_features: int = 2048
    sim_features: int = 512

    def __post_init__(self):
        _checks.non_negative(self.name, "beta", self.beta)
        if self.beta > 1:
            raise ValueError(f"rule 'predsim': beta={self.beta!r} must be in [0, 1]")
        _checks.positive_int(self.name, "max_features", self.max_features)
        _checks.positive_int(self.name, "sim_features", self.sim_features)

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        n = _local_loss.pooled_size(op.in_shape, self.max_features)
        if name == "LC":
            return _feedback_init.draw(key, (n, num_classes), "lecun_normal", 1.0, op.dtype)
        if name == "SIM":
            return _feedback_init.draw(key, (n, self.sim_features), "lecun_normal", 1.0,
                                       op.dtype)
        return super().init_feedback(name, key, op, num_classes)

    def head_params(self, feedback: dict) -> Any:
        return (feedback["LC"], feedback["SIM"])

    def head_loss(self):
        return functools.partial(_loss, max_features=self.max_features, beta=float(self.beta))
