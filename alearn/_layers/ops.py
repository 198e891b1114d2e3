"""Linear operators (dense, convolution) as hashable, shape-aware objects.

A rule never hard-codes matrix algebra: it asks the operator for the forward product
``apply(x, w)`` and its two transposes, ``input_grad(g, w)`` (the error sent down through
weights ``w``) and ``weight_grad(x, g)`` (the weight update formed by the pair (x, g)).
The same rule therefore works for dense layers and convolutions, as the ASAP thesis
prescribes ("the same rules apply with convolution in place of the matrix product").
The operators carry their static shapes so that transposes need no primal values: a rule
saves for its backward pass only the residuals it really uses.

Each operator also says how its kernel reads as the 2-D map it is, whatever its rank:
``kernel_in_axes`` (contracted with x: the fan-in side, a convolution's window included),
``kernel_out_axes``, ``kernel_window_axes``, ``kernel_batch_axes``, their one-letter
summary ``kernel_layout`` and ``fans``; and ``in_feature_ndim``, how many trailing axes of
x a position-wise map contracts. The defaults describe dense (in, out) and conv HWIO
kernels; the general operators (``alearn.wrappers.ops``) derive theirs from their
dimension numbers or einsum equation. Rules use them for feedback draws (FA, KP, ASAP),
sign symmetry's magnitude, weight mirror's noise and the sharing rules' feature axes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from alearn import _native as native
from alearn._layers import conv_autotune, conv_impl

Array = jax.Array


def _transpose(fn, shape: tuple[int, ...], g: Array) -> Array:
    """Transpose of the linear map ``fn`` (input ``shape``) applied to cotangent ``g``.

    Inside ``jax.shard_map`` (the AL device pipeline), ``g`` varies over mesh axes that
    ``jax.linear_transpose``'s spec cannot express; there the transpose is taken with
    ``jax.vjp`` at a zero point marked varying like ``g`` (exact: ``fn`` is linear).
    """
    axes = tuple(sorted(jax.typeof(g).manual_axis_type.varying))
    if not axes:
        (d,) = jax.linear_transpose(fn, jax.ShapeDtypeStruct(shape, g.dtype))(g)
        return d
    zero = jax.lax.pcast(jnp.zeros(shape, g.dtype), axes, to="varying")
    (d,) = jax.vjp(fn, zero)[1](g)
    return d


@dataclasses.dataclass(frozen=True)
class LinearOp:
    """Base class: a bilinear map ``y = apply(x, w)`` with static shapes."""

    in_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    dtype: Any = jnp.float32

    def apply(self, x: Array, w: Array) -> Array:
        raise NotImplementedError

    @property
    def out_shape(self) -> tuple[int, ...]:
        return jax.eval_shape(
            self.apply,
            jax.ShapeDtypeStruct(self.in_shape, self.dtype),
            jax.ShapeDtypeStruct(self.kernel_shape, self.dtype),
        ).shape

    # --- the kernel read as the 2-D map it is ------------------------------------------
    @property
    def kernel_in_axes(self) -> tuple[int, ...]:
        """Kernel axes contracted with the input: the map's input side, so its fan-in is
        the product of their sizes (a convolution's window axes included). Default: every
        axis but the last (dense (in, out), conv HWIO: H, W, I)."""
        return tuple(range(len(self.kernel_shape) - 1))

    @property
    def kernel_out_axes(self) -> tuple[int, ...]:
        """Kernel axes indexing the output features. Default: the last axis."""
        return (len(self.kernel_shape) - 1,) if self.kernel_shape else ()

    @property
    def kernel_window_axes(self) -> tuple[int, ...]:
        """The subset of ``kernel_in_axes`` that slides over positions (a convolution's
        spatial axes, the "receptive field" of jax's fan convention). Default: every axis
        but the last two (none for a dense kernel, H and W for HWIO)."""
        return tuple(range(max(0, len(self.kernel_shape) - 2)))

    @property
    def kernel_batch_axes(self) -> tuple[int, ...]:
        """Kernel axes that are neither inputs nor outputs (``dot_general`` rhs batch
        dimensions, einsum labels of x, kernel and output): independent maps side by side."""
        used = set(self.kernel_in_axes) | set(self.kernel_out_axes)
        return tuple(a for a in range(len(self.kernel_shape)) if a not in used)

    @property
    def kernel_layout(self) -> str:
        """One letter per kernel axis: ``i`` input, ``o`` output, ``b`` batch."""
        ins, outs = set(self.kernel_in_axes), set(self.kernel_out_axes)
        return "".join("i" if a in ins else "o" if a in outs else "b"
                       for a in range(len(self.kernel_shape)))

    @property
    def fans(self) -> tuple[int, int]:
        """(fan_in, fan_out) in jax's variance-scaling convention: fan_in = product of the
        input axes (window included), fan_out = output axes times the window. Dense and
        HWIO kernels give ``initializers.fans(kernel_shape)``."""
        size = lambda axes: math.prod(self.kernel_shape[a] for a in axes)  # noqa: E731
        return size(self.kernel_in_axes), size(self.kernel_out_axes + self.kernel_window_axes)

    @property
    def in_feature_ndim(self) -> int | None:
        """How many trailing axes of x the map contracts position by position (1 for
        ``x @ w``; the positions are x's other axes), or None when the map is not
        position-wise (convolutions mix neighbouring positions) or unknown (the default)."""
        return None

    def input_grad(self, g: Array, w: Array) -> Array:
        """Transpose in x: the error sent down through weights ``w`` (W^T g for dense)."""
        return _transpose(lambda x: self.apply(x, w), self.in_shape, g)

    def weight_grad(self, x: Array, g: Array) -> Array:
        """Transpose in w: the weight update formed by (activation x, error g)."""
        return _transpose(lambda w: self.apply(x, w), self.kernel_shape, g)


@dataclasses.dataclass(frozen=True)
class DenseOp(LinearOp):
    """``y = x @ w`` over the last axis of x; w has shape (in_features, out_features)."""

    @property
    def in_feature_ndim(self) -> int:
        return 1

    def apply(self, x: Array, w: Array) -> Array:
        return jnp.dot(x, w)

    def input_grad(self, g: Array, w: Array) -> Array:
        return jnp.dot(g, w.T)

    def weight_grad(self, x: Array, g: Array) -> Array:
        x2 = x.reshape(-1, x.shape[-1])
        return jnp.dot(x2.T, g.reshape(-1, g.shape[-1]))


@dataclasses.dataclass(frozen=True)
class ConvOp(LinearOp):
    """2-D convolution, NHWC inputs and HWIO kernels.

    ``impl`` chooses how each of ``apply``, ``input_grad`` and ``weight_grad`` is computed:
    XLA's convolution, or the exact im2col or banded matrix-product forms; ``"auto"`` = per
    shape, by a cached timing on CPU (retimed if it was taken under load or has gone
    stale), XLA elsewhere (see :mod:`alearn._layers.conv_impl` for the forms and
    :mod:`alearn._layers.conv_autotune` for the choice).
    """

    strides: tuple[int, int] = (1, 1)
    padding: Any = "SAME"  # "SAME", "VALID" or ((lo, hi), (lo, hi))
    impl: str = "auto"

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        return conv_impl.explicit_padding(self.in_shape, self.kernel_shape, self.strides,
                                          self.padding)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return jax.eval_shape(
            lambda x, w: conv_impl.conv_xla(x, w, self.strides, self.pads),
            jax.ShapeDtypeStruct(self.in_shape, self.dtype),
            jax.ShapeDtypeStruct(self.kernel_shape, self.dtype),
        ).shape

    def _choose(self, product: str, candidates: dict, arg_shapes: tuple) -> str:
        key = (f"{product}|x{self.in_shape}|w{self.kernel_shape}|s{tuple(self.strides)}"
               f"|p{self.pads}|{jnp.dtype(self.dtype).name}")
        return conv_autotune.resolve(self.impl, product, candidates, arg_shapes, self.dtype, key)

    def _forms(self, product: str) -> dict:
        s, p = tuple(self.strides), self.pads
        banded = lambda x, w: conv_impl.conv_banded(x, w, s, p)  # noqa: E731
        if product == "apply":
            return {"xla": lambda x, w: conv_impl.conv_xla(x, w, s, p),
                    "im2col": lambda x, w: conv_impl.conv_im2col(x, w, s, p),
                    "banded": banded,
                    "dnnl": lambda x, w: conv_impl.conv_dnnl(x, w, s, p)}
        if product == "input_grad":
            return {"xla": lambda g, w: _transpose(
                        lambda x: conv_impl.conv_xla(x, w, s, p), self.in_shape, g),
                    "im2col": lambda g, w: conv_impl.input_grad_im2col(
                        g, w, self.in_shape, s, p, _transpose),
                    "banded": lambda g, w: _transpose(lambda x: banded(x, w), self.in_shape, g),
                    "dnnl": lambda g, w: conv_impl.input_grad_dnnl(g, w, self.in_shape, s, p)}
        xla = lambda x, g: _transpose(  # noqa: E731
            lambda w: conv_impl.conv_xla(x, w, s, p), self.kernel_shape, g)
        forms = {"xla": xla,
                 "im2col": lambda x, g: conv_impl.weight_grad_im2col(
                     x, g, self.kernel_shape, s, p),
                 "banded": lambda x, g: conv_impl.weight_grad_banded(
                     x, g, self.kernel_shape, s, p),
                 "dnnl": lambda x, g: conv_impl.weight_grad_dnnl(
                     x, g, self.kernel_shape, s, p)}
        for name in conv_impl.chunked_forms(self.in_shape[0]):
            forms[name] = functools.partial(conv_impl.weight_grad_xla_chunked,
                                            chunk=int(name[len("xla_b"):]), weight_grad=xla)
        return forms

    def _run(self, product: str, a: Array, b: Array) -> Array:
        forms = self._forms(product)
        drop = set()
        if not conv_impl.banded_fits(self.in_shape, self.kernel_shape, self.strides, self.pads):
            drop.add("banded")
        if not conv_impl.im2col_fits(self.kernel_shape):
            drop.add("im2col")
        # only where dnnl could be used (not when XLA's forms are forced, not off CPU):
        # asking builds the native library
        impl = conv_autotune.effective(self.impl)
        dnnl_why = self._dnnl_unavailable() if impl in ("auto", "dnnl") else "not asked for"
        if dnnl_why or not conv_impl.dnnl_worth_timing(self.in_shape, self.kernel_shape,
                                                        self.strides, self.pads):
            drop.add("dnnl")  # forced (impl="dnnl") it still runs where it can
        candidates = {k: v for k, v in forms.items() if k not in drop}
        choice = self._choose(product, candidates, (a.shape, b.shape))
        if choice == "dnnl" and dnnl_why:
            raise ValueError(f"conv impl 'dnnl' (forced by impl= or ALEARN_CONV_IMPL) cannot "
                             f"run here: {dnnl_why}")
        return forms[choice](a, b)

    def _dnnl_unavailable(self) -> str:
        """Why the dnnl form is not offered for this convolution ("" when it is)."""
        if conv_autotune._backend() != "cpu":
            return "oneDNN's convolutions are CPU custom calls"
        if not conv_impl.dnnl_fits(self.dtype, self.pads):
            return "it takes float32 and non-negative padding only"
        devices = conv_autotune.partition_devices()
        if devices > 1:
            return (f"the step is partitioned over {devices} devices, where XLA would replicate "
                    "the custom call (every device convolving the whole batch); use "
                    "impl='auto' or 'xla'")
        if not native.available():
            return native.why_unavailable()
        return ""

    def apply(self, x: Array, w: Array) -> Array:
        return self._run("apply", x, w)

    def input_grad(self, g: Array, w: Array) -> Array:
        return self._run("input_grad", g, w)

    def weight_grad(self, x: Array, g: Array) -> Array:
        return self._run("weight_grad", x, g)
