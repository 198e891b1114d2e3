"""Multi-layer perceptron built from rule-pluggable Dense layers."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax

from alearn.layers import Dense, Tape
from alearn.models._common import HE_NORMAL, activation_fn, flatten, scaled
from alearn.rules.bp import BP

Array = jax.Array


class MLP(nn.Module):
    """``widths`` hidden layers with ``activation``, then a linear classifier.

    Called as ``model.apply(variables, x, rule=rule, train=False)``; ``x`` is flattened.
    The AL thesis MNIST MLP (Sec. 3.2.1) is ``widths=(1024, 1024, 5120, 1024, 1024)``.
    Layers are named ``Dense_0 ... Dense_{n}`` (the last one is the classifier). No block
    marks: rules that group layers count them (``tape.layer_index``).

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
    def __call__(self, x: Array, *, rule: Any = BP(), train: bool = False) -> Array:
        del train
        act = activation_fn(self.activation)
        tape = Tape(rule, x.shape[0], self.num_classes)
        x = flatten(x)
        for w in self.widths:
            x = act(Dense(scaled(w, self.width_multiplier), kernel_init=self.kernel_init)(x, tape))
        x = Dense(self.num_classes, kernel_init=self.kernel_init)(x, tape)
        return tape.finish(x)
