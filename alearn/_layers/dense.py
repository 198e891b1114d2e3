"""Rule-pluggable Dense layer."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from alearn._layers.linear import apply_rule
from alearn._layers.ops import DenseOp
from alearn._layers.tape import Tape

Array = jax.Array


class Dense(nn.Module):
    """``y = x W + b`` whose backward pass is the tape's learning rule.

    Parameter names and shapes match ``flax.linen.Dense`` (``kernel`` (in, out), ``bias``),
    so a plain Flax model with the same structure shares its parameter tree.
    """

    features: int
    use_bias: bool = True
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Array] = nn.initializers.zeros_init()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, tape: Tape) -> Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.dtype)
        op = DenseOp(in_shape=tuple(x.shape), kernel_shape=tuple(kernel.shape), dtype=self.dtype)
        y = apply_rule(self, op, x, kernel, tape)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), self.dtype)
        return y
