"""Multi-layer perceptron built from rule-pluggable Dense layers."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from alearn.layers import Dense, Tape
from alearn.rules.bp import BP

Array = jax.Array


class MLP(nn.Module):
    """``widths`` hidden layers with ``activation``, then a linear classifier.

    Called as ``model.apply(variables, x, rule=rule, train=False)``; ``x`` is flattened.
    """

    num_classes: int
    widths: Sequence[int] = (1024, 1024)
    activation: Callable[[Array], Array] = nn.relu
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array, *, rule: Any = BP(), train: bool = False) -> Array:
        del train
        tape = Tape(rule, x.shape[0], self.num_classes)
        x = x.reshape(x.shape[0], -1)
        for w in self.widths:
            x = self.activation(Dense(w, kernel_init=self.kernel_init)(x, tape))
        x = Dense(self.num_classes, kernel_init=self.kernel_init)(x, tape)
        return tape.finish(x)
