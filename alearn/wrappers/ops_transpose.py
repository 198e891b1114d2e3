"""The linear operator of ``flax.linen.ConvTranspose`` (``lax.conv_transpose``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jax import lax

from alearn._layers.ops import LinearOp

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


def conv_transpose_op(lhs: Array, rhs: Array, strides: Any, padding: Any,
                      rhs_dilation: Any = None, dimension_numbers: Any = None,
                      transpose_kernel: bool = False, precision: Any = None,
                      preferred_element_type: Any = None) -> ConvTransposeOp:
    """The operator of a ``lax.conv_transpose`` call (its arguments made hashable)."""
    return ConvTransposeOp(
        in_shape=tuple(lhs.shape), kernel_shape=tuple(rhs.shape), dtype=rhs.dtype,
        strides=tuple(strides), padding=padding if isinstance(padding, str)
        else tuple(tuple(p) for p in padding),
        rhs_dilation=None if rhs_dilation is None else tuple(rhs_dilation),
        dimension_numbers=dimension_numbers, transpose_kernel=transpose_kernel,
        precision=precision, preferred_element_type=preferred_element_type)
