"""Multilayer perceptron (AL thesis Sec. 3.2.1, ASAP thesis Sec. 3.1), plain ``flax.linen``."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from alearn.models._common import HE_NORMAL, activation_fn, flatten, scaled

Array = jax.Array


class MLP(nn.Module):
    """``widths`` hidden layers with ``activation``, then a linear classifier.

    Called as ``model.apply(variables, x)``; ``x`` is flattened. The AL thesis MNIST MLP
    (Sec. 3.2.1) is ``widths=(1024, 1024, 5120, 1024, 1024)``. Layers are named
    ``Dense_0 ... Dense_{n}`` (the last one is the classifier). A plain chain: rules that
    group layers count them in forward order.

    Attributes:
      num_classes: output units.
      widths: hidden widths before ``width_multiplier``.
      activation: a name ("relu", "elu", "sigmoid", "tanh", ...) or a callable.
      width_multiplier: scales every hidden width (tests and CPU runs shrink models).
      kernel_init: kernel initialiser (He normal, the papers' setup).
    """

    num_classes: int
    widths: Sequence[int] = (1024, 1024)
    activation: str | Callable[[Array], Array] = "relu"
    width_multiplier: float = 1.0
    kernel_init: Callable[..., Array] = HE_NORMAL

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        del train
        act = activation_fn(self.activation)
        x = flatten(x)
        for w in self.widths:
            x = act(nn.Dense(scaled(w, self.width_multiplier), kernel_init=self.kernel_init)(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)
