"""The exact forms of a 2-D convolution and its transposes: XLA's, im2col and banded.

XLA:CPU's convolution runs at a fraction of the machine's GEMM speed on the small and
medium convolutions of the papers' networks (LeNet-5, the AlexNet variant, CIFAR ResNets),
and its transposes (the input and weight cotangents every rule asks for) are slower still.
The *im2col* form writes the convolution as one matrix product: the kh·kw shifted windows
of the padded input are sliced out and concatenated on the channel axis ("patches", shape
(N·Ho·Wo, kh·kw·C)), then multiplied by the kernel reshaped to (kh·kw·C, O). Its transposes
are matrix products too: the weight cotangent is patchesᵀ·g, the input cotangent is
col2im(g·Wᵀ) (the transpose of the slicing, a sum of shifted, padded windows).

The *dnnl* form is oneDNN's convolution and its two transposes, as XLA custom calls on CPU
(:mod:`alearn._native`, built on first use): 1.2-11x XLA's speed per product on the CIFAR
ResNet and AlexNet shapes (docs/notes/perf.md). It is timed where the native library loads,
the dtype is float32, the convolution has at least ``DNNL_MIN_FLOPS`` and the step is not
partitioned over several devices (``conv_autotune.partitioned``: XLA would replicate the
custom call's operands instead of splitting them).

The *banded* form gathers only the kh input rows each output row reads (kh copies of the
input, not kh·kw) and multiplies them by the kernel laid out as a band matrix over one row
(kh·Wp·C, Wo·O): Wp/kw times the multiply-adds, but one large matrix product instead of a
convolution of few channels. On LeNet-5's 5×5 convolutions (1 → 6 and 6 → 16 channels,
rows of 28 and 12 pixels) it is the fastest form for five of the six products here
(docs/notes/perf.md). Its input cotangent is the linear transpose of the row gathering and
the product; its weight cotangent is rowsᵀ·g followed by the band matrix's transpose.

All forms are exact (equal to ``jax.lax.conv_general_dilated`` and its VJP to float32
rounding: ``tests/test_conv_impl.py``). Which is faster depends on the shape and the machine:
:mod:`alearn._layers.conv_autotune` chooses one per product and shape (``impl="auto"``:
XLA off CPU, timed and cached on CPU; ``ALEARN_CONV_IMPL`` overrides), among the forms
``banded_fits`` admits.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

IMPLS = ("auto", "xla", "im2col", "banded", "dnnl")
#: Weight-cotangent-only forms: XLA's weight cotangent summed over chunks of the batch of
#: this many examples (:func:`weight_grad_xla_chunked`).
WEIGHT_GRAD_CHUNKS = (8, 16, 32)
CHUNKED_FORMS = tuple(f"xla_b{n}" for n in WEIGHT_GRAD_CHUNKS)
FORMS = IMPLS[1:] + CHUNKED_FORMS
PRODUCTS = ("apply", "input_grad", "weight_grad")
_DIMS = ("NHWC", "HWIO", "NHWC")


def explicit_padding(in_shape, kernel_shape, strides, padding) -> tuple[tuple[int, int], ...]:
    """``padding`` ("SAME", "VALID" or pairs) as ((lo, hi), (lo, hi)) for NHWC/HWIO."""
    if isinstance(padding, str):
        return tuple(jax.lax.padtype_to_pads(in_shape[1:3], kernel_shape[:2], strides, padding))
    return tuple(tuple(int(v) for v in p) for p in padding)


def conv_xla(x: Array, w: Array, strides, padding) -> Array:
    """XLA's convolution (NHWC input, HWIO kernel)."""
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DIMS)


def _dnnl_call(target: str, out_shape, a: Array, b: Array, strides, pads) -> Array:
    (pt, pb), (pl, pr) = pads
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(tuple(out_shape), a.dtype),
                            vmap_method="sequential")(
        a, b, strides=np.asarray(strides, np.int64), pads=np.asarray([pt, pb, pl, pr], np.int64))


def _out_hw(in_shape, kernel_shape, strides, pads) -> tuple[int, int]:
    (sh, sw), ((pt, pb), (pl, pr)) = strides, pads
    return ((in_shape[1] + pt + pb - kernel_shape[0]) // sh + 1,
            (in_shape[2] + pl + pr - kernel_shape[1]) // sw + 1)


def conv_dnnl(x: Array, w: Array, strides, pads) -> Array:
    """oneDNN's convolution (NHWC input, HWIO kernel; float32, non-negative pads)."""
    ho, wo = _out_hw(x.shape, w.shape, strides, pads)
    return _dnnl_call("alearn_dnnl_conv_fwd", (x.shape[0], ho, wo, w.shape[3]), x, w,
                      strides, pads)


def input_grad_dnnl(g: Array, w: Array, in_shape, strides, pads) -> Array:
    """oneDNN's input cotangent of :func:`conv_dnnl` (the transposed convolution of g)."""
    return _dnnl_call("alearn_dnnl_conv_input_grad", in_shape, g, w, strides, pads)


def weight_grad_dnnl(x: Array, g: Array, kernel_shape, strides, pads) -> Array:
    """oneDNN's weight cotangent of :func:`conv_dnnl` (HWIO)."""
    return _dnnl_call("alearn_dnnl_conv_weight_grad", kernel_shape, x, g, strides, pads)


def dnnl_fits(dtype, pads) -> bool:
    """Whether the dnnl form applies: float32, non-negative pads (the custom calls' domain)."""
    return jnp.dtype(dtype) == jnp.float32 and all(v >= 0 for p in pads for v in p)


#: Smallest convolution (multiply-adds x 2 of one product) for which the autotuner times the
#: dnnl form. Below it the custom call's fixed costs inside a step (no fusion with its
#: neighbours, waking OpenMP's workers) outweigh its gain, which a timing of the product
#: alone does not see: LeNet-5's convolutions (22-39 MFLOP) chose dnnl when timed alone and
#: made the LeNet step 3-7 % slower (docs/notes/perf.md); every conv of the CIFAR ResNet-18
#: and AlexNet at x0.25 but the 1x1 shortcuts is above 100 MFLOP. ``impl="dnnl"`` forces it.
DNNL_MIN_FLOPS = 1e8


def conv_flops(in_shape, kernel_shape, strides, pads) -> float:
    """2 x the multiply-adds of the convolution (each of its three products has as many)."""
    kh, kw, c, o = kernel_shape
    ho, wo = _out_hw(in_shape, kernel_shape, strides, pads)
    return 2.0 * in_shape[0] * ho * wo * kh * kw * c * o


def dnnl_worth_timing(in_shape, kernel_shape, strides, pads) -> bool:
    """Whether the autotuner times the dnnl form for this shape (:data:`DNNL_MIN_FLOPS`)."""
    return conv_flops(in_shape, kernel_shape, strides, pads) >= DNNL_MIN_FLOPS


def patches(x: Array, kernel_hw: tuple[int, int], strides, pads) -> Array:
    """(N, Ho, Wo, kh·kw·C): the shifted windows of padded x, concatenated on channels.

    The channel order (window row, window column, input channel) matches an HWIO kernel
    reshaped to (kh·kw·C, O).
    """
    (kh, kw), (sh, sw) = kernel_hw, strides
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    ho = (xp.shape[1] - kh) // sh + 1
    wo = (xp.shape[2] - kw) // sw + 1
    cols = [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def conv_im2col(x: Array, w: Array, strides, pads) -> Array:
    """The convolution as patches(x) · reshape(w): one matrix product."""
    kh, kw, c, o = w.shape
    p = patches(x, (kh, kw), strides, pads)
    return jnp.dot(p.reshape(-1, kh * kw * c), w.reshape(kh * kw * c, o)).reshape(
        *p.shape[:3], o)


def weight_grad_im2col(x: Array, g: Array, kernel_shape, strides, pads) -> Array:
    """patches(x)ᵀ · g reshaped to HWIO: the weight cotangent as one matrix product."""
    kh, kw, c, o = kernel_shape
    p = patches(x, (kh, kw), strides, pads).reshape(-1, kh * kw * c)
    return jnp.dot(p.T, g.reshape(-1, o)).reshape(kernel_shape)


def input_grad_im2col(g: Array, w: Array, in_shape, strides, pads,
                      transpose: Callable[[Callable, tuple, Array], Array]) -> Array:
    """col2im(g · Wᵀ): the input cotangent as a matrix product and the patches' transpose.

    ``transpose(fn, shape, ct)`` is the linear transpose used by the caller (it handles
    shard_map's varying axes).
    """
    kh, kw, c, o = w.shape
    gp = jnp.dot(g.reshape(-1, o), w.reshape(kh * kw * c, o).T)
    gp = gp.reshape(*g.shape[:3], kh * kw * c)
    return transpose(lambda x: patches(x, (kh, kw), strides, pads), tuple(in_shape), gp)


def _band_selector(in_w: int, out_w: int, kw: int, sw: int) -> np.ndarray:
    """(in_w, out_w, kw) 0/1 array: 1 where input column p feeds output column q via tap j."""
    sel = np.zeros((in_w, out_w, kw), np.float32)
    for q in range(out_w):
        for j in range(kw):
            sel[sw * q + j, q, j] = 1.0
    return sel


def banded_kernel(w: Array, in_w: int, out_w: int, sw: int) -> Array:
    """The kernel as the (kh·Wp·C, Wo·O) band matrix of one output row's product.

    Entry ((i, p, c), (q, o)) is w[i, p − sw·q, c, o] where 0 ≤ p − sw·q < kw, else 0: each
    entry is one kernel element or zero (a product with a 0/1 selector, so exact).
    """
    kh, kw, c, o = w.shape
    sel = jnp.asarray(_band_selector(in_w, out_w, kw, sw), w.dtype)
    t = jnp.einsum("pqj,ijco->ipcqo", sel, w, precision=jax.lax.Precision.HIGHEST)
    return t.reshape(kh * in_w * c, out_w * o)


def row_windows(x: Array, kh: int, sh: int, pads) -> Array:
    """(N, Ho, kh·Wp·C): for each output row, the kh padded input rows it reads."""
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    ho = (xp.shape[1] - kh) // sh + 1
    rows = [xp[:, i:i + sh * (ho - 1) + 1:sh] for i in range(kh)]
    rows = rows[0][:, :, None] if kh == 1 else jnp.stack(rows, axis=2)  # (N, Ho, kh, Wp, C)
    return rows.reshape(x.shape[0], ho, -1)


def conv_banded(x: Array, w: Array, strides, pads) -> Array:
    """The convolution as rows(x) · band(w): one matrix product per output row.

    Only the kh input rows of each output row are gathered (kh copies of the input, not
    im2col's kh·kw); the kernel becomes a (kh·Wp·C, Wo·O) band matrix, so the product does
    Wp/kw times the convolution's multiply-adds at matrix-product speed. It wins where
    channels are few and rows narrow (LeNet's 5×5 convolutions on 28- and 12-pixel rows);
    ``banded_fits`` keeps it out of the choice where the band matrix is large.
    """
    kh, kw, c, o = w.shape
    (sh, sw) = strides
    rows = row_windows(x, kh, sh, pads)
    in_w = x.shape[2] + sum(pads[1])
    out_w = (in_w - kw) // sw + 1
    y = jnp.dot(rows, banded_kernel(w, in_w, out_w, sw))
    return y.reshape(*rows.shape[:2], out_w, o)


def weight_grad_banded(x: Array, g: Array, kernel_shape, strides, pads) -> Array:
    """rows(x)ᵀ · g, then the band matrix's transpose (the sum along each band diagonal).

    Written out rather than left to ``jax.linear_transpose`` of :func:`conv_banded`, whose
    transpose contracts over the batch and row axes in an order XLA:CPU runs 2× slower.
    """
    kh, kw, c, o = kernel_shape
    rows = row_windows(x, kh, strides[0], pads)
    in_w = x.shape[2] + sum(pads[1])
    out_w = g.shape[2]
    band = jnp.dot(rows.reshape(-1, rows.shape[-1]).T, g.reshape(-1, out_w * o))
    sel = jnp.asarray(_band_selector(in_w, out_w, kw, strides[1]), g.dtype)
    return jnp.einsum("pqj,ipcqo->ijco", sel, band.reshape(kh, in_w, c, out_w, o),
                      precision=jax.lax.Precision.HIGHEST)


def weight_grad_xla_chunked(x: Array, g: Array, chunk: int, weight_grad: Callable) -> Array:
    """XLA's weight cotangent as the sum of the weight cotangents of batch chunks.

    ``weight_grad(x_chunk, g_chunk)`` is the XLA form on a chunk of ``chunk`` examples (the
    last chunk may be smaller); the chunks' cotangents are added in order. Exact up to the
    order of the float32 sum over examples. XLA:CPU computes a weight cotangent as a
    convolution whose window is the whole feature map, and on the CIFAR ResNet and AlexNet
    shapes it runs 2-3x faster over chunks of 8-16 examples than over a batch of 128
    (docs/notes/perf.md, "Conv nets at realistic widths"); the forward product and the
    input cotangent do not gain from chunking.
    """
    n = x.shape[0]
    parts = [weight_grad(x[i:i + chunk], g[i:i + chunk]) for i in range(0, n, chunk)]
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out


def chunked_forms(batch: int) -> tuple[str, ...]:
    """The chunked weight-cotangent forms worth timing for ``batch`` examples (a chunk
    smaller than the batch)."""
    return tuple(f"xla_b{n}" for n in WEIGHT_GRAD_CHUNKS if n < batch)


#: Largest window (kh·kw) for which the autotuner tries the im2col input cotangent.
IM2COL_MAX_TAPS = 9


def im2col_fits(kernel_shape) -> bool:
    """Whether the im2col forms are worth timing: only for windows up to 3x3. Their
    kh·kw window slices (the patches; col2im's shifted, padded sums) stay one fusion when a
    product is compiled alone, but inside a training step XLA splits them into one pass per
    window, each fused with the producer it reads. On 5x5 kernels: the AlexNet's conv2
    input cotangent took 51 ms of a 128 ms step where alone it timed 7.7 ms against XLA's
    10.3; LeNet-5's conv2 forward recomputed the max pool before it in each of its 25
    slices (7-15 ms of a 20-29 ms step, where alone it timed 1.22 ms against banded's 1.29;
    the step 13-15 ms instead of 10-11; docs/notes/perf.md). Timed alone, im2col would be
    chosen for the wrong reason."""
    return kernel_shape[0] * kernel_shape[1] <= IM2COL_MAX_TAPS


#: Largest band matrix (elements) and largest multiply-add overhead (Wp/kw) for which the
#: autotuner tries the banded form.
BANDED_MAX_ELEMENTS = 1 << 22
BANDED_MAX_OVERHEAD = 8.0


def banded_fits(in_shape, kernel_shape, strides, pads) -> bool:
    """Whether the banded form is worth timing for this shape (band matrix size and overhead)."""
    kh, kw, c, o = kernel_shape
    in_w = in_shape[2] + sum(pads[1])
    out_w = (in_w - kw) // strides[1] + 1
    return (kh * in_w * c * out_w * o <= BANDED_MAX_ELEMENTS
            and in_w / kw <= BANDED_MAX_OVERHEAD)
