"""Linear operators for the layers the wrapper intercepts (general dot, conv, einsum).

The standard cases map onto alearn's own :class:`~alearn._layers.DenseOp` /
:class:`~alearn._layers.ConvOp`, so a wrapped ``flax.linen.Dense`` / ``Conv`` runs exactly
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

from alearn._layers.ops import ConvOp, DenseOp, LinearOp

Array = jax.Array

# the flax.linen layers whose linear maps alearn.wrap routes through the rule
SUPPORTED = ("flax.linen.Dense, DenseGeneral, Conv, ConvTranspose, Einsum, Embed.attend, "
             "LSTMCell, OptimizedLSTMCell, GRUCell, SimpleCell, MGUCell")


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

    @property
    def kernel_in_axes(self) -> tuple[int, ...]:
        """The rhs contracting dimensions (``Embed.attend``'s (V, d) kernel: (1,))."""
        (_, rc), _ = self.dimension_numbers
        return tuple(sorted(int(a) % len(self.kernel_shape) for a in rc))

    @property
    def kernel_out_axes(self) -> tuple[int, ...]:
        """The rhs free dimensions (neither contracting nor batch)."""
        (_, rc), (_, rb) = self.dimension_numbers
        used = {int(a) % len(self.kernel_shape) for a in tuple(rc) + tuple(rb)}
        return tuple(a for a in range(len(self.kernel_shape)) if a not in used)

    @property
    def kernel_window_axes(self) -> tuple[int, ...]:
        return ()

    @property
    def in_feature_ndim(self) -> int | None:
        """The number of lhs contracting dimensions when they are x's trailing axes and
        there are no batch dimensions; None otherwise."""
        (lc, _), (lb, _) = self.dimension_numbers
        n = len(self.in_shape)
        axes = sorted(int(a) % n for a in lc)
        return len(axes) if axes and not lb and axes == list(range(n - len(axes), n)) else None

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

    def _rhs_spec(self) -> tuple[int, ...]:
        """(out feature axis, in feature axis, spatial axes...) of the kernel."""
        dn = lax.conv_dimension_numbers(self.in_shape, self.kernel_shape,
                                        self.dimension_numbers)
        return tuple(int(a) for a in dn.rhs_spec)

    @property
    def kernel_in_axes(self) -> tuple[int, ...]:
        """The kernel's input-feature and spatial axes (H, W, I for HWIO)."""
        return tuple(sorted(self._rhs_spec()[1:]))

    @property
    def kernel_out_axes(self) -> tuple[int, ...]:
        return (self._rhs_spec()[0],)

    @property
    def kernel_window_axes(self) -> tuple[int, ...]:
        return tuple(sorted(self._rhs_spec()[2:]))

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

    def _specs(self) -> tuple[str, str, str] | None:
        """(x labels, kernel labels, output labels) with x's ellipsis dropped; None when
        the kernel's labels are not plain (an ellipsis or a repeated label)."""
        eq = self.equation.replace(" ", "")
        ins, arrow, out = eq.partition("->")
        if ins.count(",") != 1:
            return None
        xs, ws = ins.split(",")
        if not arrow:  # implicit output: the labels seen once, sorted
            out = "".join(sorted(c for c in set(xs + ws) if c != "." and (xs + ws).count(c) == 1))
        if "." in ws or len(set(ws)) != len(ws) or len(ws) != len(self.kernel_shape):
            return None
        return xs.replace("...", ""), ws, out.replace("...", "")

    @property
    def kernel_in_axes(self) -> tuple[int, ...]:
        """Kernel labels absent from the output (contracted, with x or alone)."""
        sp = self._specs()
        if sp is None:
            return super().kernel_in_axes
        return tuple(a for a, c in enumerate(sp[1]) if c not in sp[2])

    @property
    def kernel_out_axes(self) -> tuple[int, ...]:
        """Kernel labels in the output but not in x."""
        sp = self._specs()
        if sp is None:
            return super().kernel_out_axes
        xs, ws, out = sp
        return tuple(a for a, c in enumerate(ws) if c in out and c not in xs)

    @property
    def kernel_window_axes(self) -> tuple[int, ...]:
        return () if self._specs() is not None else super().kernel_window_axes

    @property
    def in_feature_ndim(self) -> int | None:
        """The number of x's trailing labels contracted with the kernel, when every label
        x loses is among them (no sum over positions); None otherwise."""
        sp = self._specs()
        if sp is None:
            return None
        xs, ws, out = sp
        raw = self.equation.replace(" ", "").split(",")[0]
        if "..." in raw and not raw.startswith("..."):
            return None
        lost = [c for c in xs if c not in out]
        n = len(lost)
        if n == 0 or any(c not in ws for c in lost) or list(xs[len(xs) - n:]) != lost:
            return None
        return n

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
