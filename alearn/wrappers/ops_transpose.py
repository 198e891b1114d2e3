"""The linear operator of ``flax.linen.ConvTranspose`` (``lax.conv_transpose``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jax import lax

from alearn.layers.ops import LinearOp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ConvTransposeOp(LinearOp):
    """``lax.conv_transpose(x, w, ...)`` with every static argument Flax passes; its two
    transposes are derived by ``jax.linear_transpose`` from the forward."""

    strides: Any = None
    padding: Any = None
    rhs_dilation: Any = None
    dimension_numbers: Any = None
    transpose_kernel: bool = False
    precision: Any = None
    preferred_element_type: Any = None

    def apply(self, x: Array, w: Array) -> Array:
        return lax.conv_transpose(
            x, w, self.strides, self.padding, rhs_dilation=self.rhs_dilation,
            dimension_numbers=self.dimension_numbers, transpose_kernel=self.transpose_kernel,
            precision=self.precision, preferred_element_type=self.preferred_element_type)
