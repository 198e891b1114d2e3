"""Max pooling whose gradient is cheap on CPU, equal to ``flax.linen.max_pool``'s.

``nn.max_pool`` is XLA's ``reduce_window``; its gradient is ``select_and_scatter``, which
XLA:CPU runs several times slower than the pooling itself (LeNet-5's two 2×2 pools and
their ReLUs: 2.3 + 0.7 ms of a 12 ms training step here; docs/notes/perf.md). The papers'
networks pool with non-overlapping windows (stride = window). For those, the input is
read as its windows' strided slices (x[:, i::2, j::2] for a 2×2 window): the forward pass
is their elementwise maximum, and the derivative is that of each window's first maximal
element (an index kept from the forward pass, one byte per output): the backward pass
sends each cotangent there, which is exactly what ``select_and_scatter`` does (it keeps
the first element ``>=`` all later ones). Forward mode (``jax.jvp``) works too.
Overlapping windows and non-float inputs fall back to ``nn.max_pool``. Results and
gradients equal ``nn.max_pool``'s bit for bit, ties included (``tests/test_pool.py``).
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _offsets(window: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Positions inside a window, in the order select_and_scatter scans them (row-major)."""
    return list(itertools.product(*(range(w) for w in window)))


def _strided(x: Array, window: tuple[int, ...], offset: tuple[int, ...]) -> Array:
    """The elements at ``offset`` of every window: x[:, o1::w1, o2::w2, ...]."""
    return x[(slice(None), *(slice(o, None, w) for o, w in zip(offset, window)))]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _pool_tiled(x: Array, window: tuple[int, ...]) -> Array:
    return functools.reduce(jnp.maximum, (_strided(x, window, o) for o in _offsets(window)))


@_pool_tiled.defjvp
def _pool_jvp(window, primals, tangents):
    # Elementwise over the window's strided slices: no transposition of the input, and XLA
    # fuses the maximum and the first-maximum index into one loop. The tangent is the
    # tangent of each window's first maximal element (select_and_scatter's choice); it is
    # linear in the input tangent, so JAX transposes it for reverse mode: the cotangent
    # goes to that element, the index (one byte per output) being the only residual.
    (x,), (t,) = primals, tangents
    offsets = _offsets(window)
    slices = [_strided(x, window, o) for o in offsets]
    y = functools.reduce(jnp.maximum, slices)
    dtype = jnp.int8 if len(offsets) < 128 else jnp.int32
    first_max = jnp.full(y.shape, len(offsets) - 1, dtype)
    for k in range(len(offsets) - 2, -1, -1):  # the first maximal element wins
        first_max = jnp.where(slices[k] == y, jnp.asarray(k, dtype), first_max)
    t_out = _strided(t, window, offsets[-1])
    for k in range(len(offsets) - 2, -1, -1):
        t_out = jnp.where(first_max == k, _strided(t, window, offsets[k]), t_out)
    return y, t_out


def max_pool(x: Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID") -> Array:
    """``flax.linen.max_pool`` (same arguments, same values and gradient), faster to
    differentiate when windows do not overlap (``strides`` equal to ``window_shape``)."""
    window = tuple(int(w) for w in window_shape)
    strides = (1,) * len(window) if strides is None else tuple(int(s) for s in strides)
    d = len(window)
    if strides != window or x.ndim < d + 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        return nn.max_pool(x, window, strides, padding)
    spatial = x.shape[1:1 + d]
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(spatial, window, strides, padding)
    else:
        pads = [tuple(int(v) for v in p) for p in padding]
    if any(p != (0, 0) for p in pads):
        cfg = [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), *[(0, 0, 0)] * (x.ndim - 1 - d)]
        x = jax.lax.pad(x, jnp.array(-jnp.inf, x.dtype), cfg)
    keep = tuple((s // w) * w for s, w in zip(x.shape[1:1 + d], window))
    if keep != x.shape[1:1 + d]:  # VALID drops the last partial window
        x = x[(slice(None), *(slice(0, k) for k in keep))]
    return _pool_tiled(x, window)
