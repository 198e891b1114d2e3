"""Max pooling whose gradient is cheap on CPU, equal to ``flax.linen.max_pool``'s.

``nn.max_pool`` is XLA's ``reduce_window``; its gradient is ``select_and_scatter``, which
XLA:CPU runs several times slower than the pooling itself (LeNet-5's two 2×2 pools and
their ReLUs: 2.3 + 0.7 ms of a 12 ms training step here; docs/notes/perf.md). The papers'
networks pool with non-overlapping windows (stride = window). For those, the input is
reshaped so that each window is one trailing axis: the forward pass is a ``max`` over it and
the backward pass sends each output's cotangent to the window's first maximal element (an
``argmax`` kept from the forward pass), which is exactly what ``select_and_scatter`` does
(it keeps the first element ``>=`` all later ones). Overlapping windows fall back to
``nn.max_pool``. Results and gradients equal ``nn.max_pool``'s bit for bit, ties included
(``tests/test_pool.py``).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _windows_last(x: Array, window: tuple[int, ...]) -> Array:
    """(N, *spatial, C) with spatial divisible by window -> (N, *out, C, prod(window))."""
    d = len(window)
    n, spatial, c = x.shape[0], x.shape[1:1 + d], x.shape[1 + d:]
    split = [n]
    for s, w in zip(spatial, window):
        split += [s // w, w]
    x = x.reshape(*split, *c)
    outer = [0, *range(1, 2 * d, 2)]
    inner = list(range(2, 2 * d + 1, 2))
    rest = list(range(2 * d + 1, x.ndim))
    x = x.transpose(*outer, *rest, *inner)
    return x.reshape(*x.shape[:x.ndim - d], math.prod(window))


def _windows_back(y: Array, window: tuple[int, ...], n_rest: int) -> Array:
    """Inverse of :func:`_windows_last`."""
    d = len(window)
    y = y.reshape(*y.shape[:-1], *window)
    out = y.shape[1:1 + d]
    # axes now: 0, out_1..out_d, rest..., win_1..win_d
    perm = [0]
    for k in range(d):
        perm += [1 + k, 1 + d + n_rest + k]
    perm += list(range(1 + d, 1 + d + n_rest))
    y = y.transpose(*perm)
    return y.reshape(y.shape[0], *(o * w for o, w in zip(out, window)), *y.shape[2 * d + 1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _pool_tiled(x: Array, window: tuple[int, ...]) -> Array:
    return jnp.max(_windows_last(x, window), axis=-1)


def _pool_fwd(x, window):
    xw = _windows_last(x, window)
    first_max = jnp.argmax(xw, axis=-1)  # the first maximal element, as select_and_scatter
    return jnp.max(xw, axis=-1), first_max.astype(jnp.int8 if xw.shape[-1] < 128 else jnp.int32)


def _pool_bwd(window, first_max, g):
    k = math.prod(window)
    hot = first_max[..., None] == jnp.arange(k, dtype=first_max.dtype)
    gw = jnp.where(hot, g[..., None], jnp.zeros((), g.dtype))
    return (_windows_back(gw, window, g.ndim - 1 - len(window)),)


_pool_tiled.defvjp(_pool_fwd, _pool_bwd)


def max_pool(x: Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID") -> Array:
    """``flax.linen.max_pool`` (same arguments, same values and gradient), faster to
    differentiate when windows do not overlap (``strides`` equal to ``window_shape``)."""
    window = tuple(int(w) for w in window_shape)
    strides = (1,) * len(window) if strides is None else tuple(int(s) for s in strides)
    d = len(window)
    if strides != window or x.ndim < d + 2:
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
