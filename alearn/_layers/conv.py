"""Rule-pluggable 2-D convolution (NHWC)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from alearn._layers.linear import apply_rule
from alearn._layers.ops import ConvOp
from alearn._layers.tape import Tape

Array = jax.Array


def _padding(padding: Any) -> Any:
    if isinstance(padding, str):
        return padding.upper()
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return tuple(tuple(p) for p in padding)


class Conv(nn.Module):
    """2-D convolution whose backward pass is the tape's learning rule.

    Parameter names and shapes match ``flax.linen.Conv`` (``kernel`` HWIO, ``bias``).
    ``padding`` is "SAME", "VALID", an int, or ((lo, hi), (lo, hi)). ``impl`` picks how
    the convolution and its transposes are computed (XLA's convolution or the exact im2col or
    banded matrix-product forms of :mod:`alearn._layers.conv_impl`; ``"auto"`` times them
    per shape on CPU: :mod:`alearn._layers.conv_autotune`).
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: Any = "SAME"
    use_bias: bool = True
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Array] = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    impl: str = "auto"  # "auto" | "xla" | "im2col" | "banded" (alearn._layers.conv_impl)

    @nn.compact
    def __call__(self, x: Array, tape: Tape) -> Array:
        if x.ndim != 4:
            raise ValueError(f"Conv expects NHWC input, got shape {x.shape}")
        kshape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kshape, self.dtype)
        op = ConvOp(
            in_shape=tuple(x.shape),
            kernel_shape=kshape,
            dtype=self.dtype,
            strides=tuple(self.strides),
            padding=_padding(self.padding),
            impl=self.impl,
        )
        y = apply_rule(self, op, x, kernel, tape)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), self.dtype)
        return y
