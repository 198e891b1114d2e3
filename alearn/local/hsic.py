"""HSIC-bottleneck local losses, "hsic" (Pogodin & Latham 2020, after Ma et al. 2019).

Every hidden layer minimises, on its own (pooled, flattened) output Z,

    L = HSIC(X, Z) − γ · HSIC(Y, Z),   HSIC(A, B) = tr(K_A H K_B H) / (m − 1)²,

the biased HSIC estimator with H = I − 11ᵀ/m the centering matrix of the batch of m
examples. X is the network input (the input of the first rule-aware layer), pooled the
same way as Z: the bottleneck compresses what a layer keeps about the *data*, as in both
papers (a layer's own input would only ask each layer to forget its predecessor).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from alearn._layers.ops import LinearOp
from alearn.local import _local_loss
from alearn.local.base import _HEADS, LocalRule
from alearn.rules import _checks

Array = jax.Array

_INPUT = "hsic/network_input"


def gaussian_kernel(a: Array, sigma: float) -> Array:
    """``K(i, j) = exp(−‖a_i − a_j‖² / (2 σ² d))`` for the rows of ``a`` (m x d).

    The squared distance is divided by the feature count d (σ is a per-feature width,
    σ√d the usual one): without it the kernel of a wide layer is the identity and its
    gradient vanishes.
    """
    sq = jnp.sum(a * a, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * a @ a.T, 0.0)
    return jnp.exp(-d2 / (2.0 * sigma**2 * a.shape[1]))


def hsic(k_a: Array, k_b: Array) -> Array:
    """Biased HSIC estimator ``tr(K_A H K_B H) / (m − 1)²`` from two m x m kernels."""
    m = k_a.shape[0]
    h = jnp.eye(m, dtype=k_a.dtype) - 1.0 / m
    return jnp.trace(k_a @ h @ k_b @ h) / (m - 1) ** 2


def _loss(h: Array, x: Array, y: Array, max_features: int, gamma: float,
          sigma: float) -> Array:
    """Local loss of one layer: ``HSIC(X, Z) − γ HSIC(Y, Z)`` (linear kernel ``Y Yᵀ``)."""
    z = _local_loss.pool_features(h, max_features)
    x = _local_loss.pool_features(jax.lax.stop_gradient(x), max_features)
    x = x.reshape(x.shape[0], -1)
    k_z = gaussian_kernel(z, sigma)
    return hsic(gaussian_kernel(x, sigma), k_z) - gamma * hsic(y @ y.T, k_z)


@dataclasses.dataclass(frozen=True)
class HSIC(LocalRule):
    """Each hidden layer learns from ``HSIC(X, Z) − γ HSIC(Y, Z)`` at its output ([44]).

    Z: the layer's output as read by the next rule-aware layer, average-pooled to at most
    ``max_features`` values; X: the network input pooled likewise; Gaussian kernels of
    per-feature width ``sigma`` on X and Z (see :func:`gaussian_kernel`); labels: linear
    kernel on one-hot labels, ``K_Y = Y Yᵀ`` (1 for same class, 0 otherwise), the labels
    being recovered from the cross-entropy cotangent as in the other local rules. No
    parameters besides the network's; no error crosses a layer (``dx = 0``); the output
    layer learns from the global cross-entropy error.

    Attributes:
      gamma: weight of the label term γ > 0. 2.0 by default; with these bounded kernels
        both HSIC terms are O(1), so γ of a few favours the label term without
        ignoring the compression term (Ma et al. use β in the hundreds with a
        normalised HSIC; not checked against the papers offline).
      sigma: per-feature Gaussian kernel width σ > 0 (1.0: about unit-variance features).
      max_features: size cap of the pooled Z and X.
    """

    name = "hsic"
    feedback_names: ClassVar[tuple[str, ...]] = ()
    trains_feedback: ClassVar[bool] = False

    gamma: float = 2.0
    sigma: float = 1.0
    max_features: int = 2048

    def __post_init__(self):
        _checks.positive(self.name, "gamma", self.gamma)
        _checks.positive(self.name, "sigma", self.sigma)
        _checks.positive_int(self.name, "max_features", self.max_features)

    def context(self, tape: Any, x: Array, op: LinearOp) -> Any:
        """As :class:`LocalRule`, with the network input as the head's second argument."""
        if tape.layer_index == 0:
            tape.state[_INPUT] = x
        heads = tape.state.setdefault(_HEADS, [])
        n = len(heads)
        out = super().context(tape, x, op)
        if len(heads) > n:  # a head was added: give it X instead of (absent) parameters
            heads[-1] = (heads[-1][0], tape.state[_INPUT])
        return out

    def head_params(self, feedback: dict) -> Any:
        del feedback
        return ()

    def head_loss(self):
        return functools.partial(_loss, max_features=self.max_features,
                                 gamma=float(self.gamma), sigma=float(self.sigma))
