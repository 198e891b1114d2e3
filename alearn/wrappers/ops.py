"""Linear operators for the layers the wrapper intercepts (general dot, conv, einsum).

The standard cases map onto alearn's own :class:`~alearn.layers.DenseOp` /
:class:`~alearn.layers.ConvOp`, so a wrapped ``flax.linen.Dense`` / ``Conv`` runs exactly
the computation of the native layers (same forward, same transposes). Everything else
(``DenseGeneral``'s contractions, dilated or grouped convolutions, ``Einsum``) becomes a
general operator whose two transposes ``jax.linear_transpose`` derives from the forward.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from alearn.layers.ops import ConvOp, DenseOp, LinearOp

Array = jax.Array


def _freeze(tree: Any) -> Any:
    """Nested lists/tuples -> nested tuples (hashable static fields)."""
    if isinstance(tree, (list, tuple)):
        return tuple(_freeze(t) for t in tree)
    return tree


@dataclasses.dataclass(frozen=True)
class DotGeneralOp(LinearOp):
    """``lax.dot_general(x, w, dimension_numbers)`` (``flax.linen.DenseGeneral``)."""

    dimension_numbers: Any = None
    precision: Any = None
    preferred_element_type: Any = None

    def apply(self, x: Array, w: Array) -> Array:
        return lax.dot_general(x, w, self.dimension_numbers, precision=self.precision,
                               preferred_element_type=self.preferred_element_type)


@dataclasses.dataclass(frozen=True)
class ConvGeneralOp(LinearOp):
    """``lax.conv_general_dilated`` with every static argument Flax passes."""

    window_strides: Any = None
    padding: Any = None
    lhs_dilation: Any = None
    rhs_dilation: Any = None
    dimension_numbers: Any = None
    feature_group_count: int = 1
    batch_group_count: int = 1
    precision: Any = None
    preferred_element_type: Any = None

    def apply(self, x: Array, w: Array) -> Array:
        return lax.conv_general_dilated(
            x, w, self.window_strides, self.padding, lhs_dilation=self.lhs_dilation,
            rhs_dilation=self.rhs_dilation, dimension_numbers=self.dimension_numbers,
            feature_group_count=self.feature_group_count,
            batch_group_count=self.batch_group_count, precision=self.precision,
            preferred_element_type=self.preferred_element_type)


@dataclasses.dataclass(frozen=True)
class EinsumOp(LinearOp):
    """``jnp.einsum(equation, x, w)`` (``flax.linen.Einsum``)."""

    equation: str = ""
    precision: Any = None
    preferred_element_type: Any = None

    def apply(self, x: Array, w: Array) -> Array:
        return jnp.einsum(self.equation, x, w, precision=self.precision,
                          preferred_element_type=self.preferred_element_type)


def dot_op(x: Array, w: Array, dimension_numbers: Any, precision: Any = None,
           preferred_element_type: Any = None) -> LinearOp:
    """The operator of a ``dot_general`` call: ``DenseOp`` for ``x @ w`` over x's last axis."""
    dims = _freeze(dimension_numbers)
    shapes = dict(in_shape=tuple(x.shape), kernel_shape=tuple(w.shape), dtype=w.dtype)
    if (dims == (((x.ndim - 1,), (0,)), ((), ())) and w.ndim == 2 and precision is None
            and preferred_element_type is None):
        return DenseOp(**shapes)
    return DotGeneralOp(**shapes, dimension_numbers=dims, precision=precision,
                        preferred_element_type=preferred_element_type)


_NHWC = (0, 3, 1, 2)
_HWIO = (3, 2, 0, 1)


def _is_nhwc(dimension_numbers: Any) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return (tuple(dimension_numbers.lhs_spec) == _NHWC
                and tuple(dimension_numbers.rhs_spec) == _HWIO
                and tuple(dimension_numbers.out_spec) == _NHWC)
    return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")


def _is_ones(v: Any) -> bool:
    return v is None or all(int(s) == 1 for s in v)


def conv_op(x: Array, w: Array, window_strides: Any, padding: Any, lhs_dilation: Any = None,
            rhs_dilation: Any = None, dimension_numbers: Any = None,
            feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
            preferred_element_type: Any = None) -> LinearOp:
    """The operator of a ``conv_general_dilated`` call: ``ConvOp`` for plain 2-D NHWC."""
    shapes = dict(in_shape=tuple(x.shape), kernel_shape=tuple(w.shape), dtype=w.dtype)
    pad = padding if isinstance(padding, str) else _freeze(padding)
    if (x.ndim == 4 and _is_nhwc(dimension_numbers) and _is_ones(lhs_dilation)
            and _is_ones(rhs_dilation) and feature_group_count == 1 and batch_group_count == 1
            and precision is None and preferred_element_type is None):
        return ConvOp(**shapes, strides=tuple(int(s) for s in window_strides), padding=pad)
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        dimension_numbers = lax.ConvDimensionNumbers(*(tuple(s) for s in dimension_numbers))
    return ConvGeneralOp(
        **shapes, window_strides=_freeze(window_strides), padding=pad,
        lhs_dilation=_freeze(lhs_dilation), rhs_dilation=_freeze(rhs_dilation),
        dimension_numbers=_freeze(dimension_numbers) if not isinstance(
            dimension_numbers, lax.ConvDimensionNumbers) else dimension_numbers,
        feature_group_count=int(feature_group_count), batch_group_count=int(batch_group_count),
        precision=precision, preferred_element_type=preferred_element_type)
