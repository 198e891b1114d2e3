"""Private building blocks shared by the paper models (not public API).

Conventions used by every model (see docs/notes/models.md):

- Kernels are drawn with He (Kaiming) normal initialisation, as both papers state
  ("We initialize all weights ... by Kaiming initialization", ASAP thesis Sec. 5.1.4; "He
  normal initializer", AL thesis Ch. 3); biases start at zero.
- Batch normalisation uses PyTorch's defaults (momentum 0.1 there, i.e. ``momentum=0.9``
  here, epsilon 1e-5), with ``use_running_average = not train`` and statistics in the
  ``batch_stats`` collection. A linear layer followed by BatchNorm has no bias (the BN
  shift makes it redundant; its gradient under batch statistics is exactly zero).
- Max pooling is 2x2, stride 2, in "ceil mode" (PyTorch ``ceil_mode=True``): odd sides are
  padded with -inf, so 28x28 MNIST inputs pool 28 -> 14 -> 7 -> 4 -> 2 -> 1 without losing
  a row.
- ``width_multiplier`` scales every hidden width (never the number of classes).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from alearn import nn as alearn_nn


Array = jax.Array


#: He (Kaiming) normal initialiser used for every conv/dense kernel.
HE_NORMAL = alearn_nn.he_normal  # drawn flat: fast to compile

#: BatchNorm momentum (running = momentum * running + (1 - momentum) * batch).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "leaky_relu": nn.leaky_relu,
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
    "identity": lambda x: x,
}


def activation_fn(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """Returns the activation function named ``activation`` (or ``activation`` itself).

    Raises:
      ValueError: an unknown activation name; the message lists the valid names.
    """
    if callable(activation):
        return activation
    key = str(activation).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of: {', '.join(sorted(_ACTIVATIONS))}"
        )
    return _ACTIVATIONS[key]


def scaled(width: int, multiplier: float) -> int:
    """``width`` scaled by ``multiplier``, rounded, at least 1."""
    if multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {multiplier}")
    return max(1, int(round(width * multiplier)))


def batch_norm(train: bool, name: str, momentum: float = BN_MOMENTUM) -> nn.BatchNorm:
    """A BatchNorm over the last axis: batch statistics when ``train``, running otherwise."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=momentum, epsilon=BN_EPSILON, name=name
    )


def max_pool_ceil(x: Array, window: int = 2) -> Array:
    """``window`` x ``window`` max pooling with stride ``window`` in ceil mode (NHWC)."""
    pads = []
    for side in x.shape[1:3]:
        out = math.ceil(side / window)
        pads.append((0, out * window - side))
    return alearn_nn.max_pool(x, (window, window), strides=(window, window), padding=tuple(pads))


def flatten(x: Array) -> Array:
    """(batch, ...) -> (batch, features)."""
    return x.reshape(x.shape[0], -1)


def check_image(x: Array, model: str) -> None:
    """Raises a ValueError naming the shape when ``x`` is not an NHWC image batch."""
    if x.ndim != 4:
        raise ValueError(
            f"{model} expects NHWC images (batch, height, width, channels), got shape {x.shape}"
        )

