"""Dimension matching for shared / approximate activations (ASAP thesis Sec. 5.1.1, Fig. 5.1).

When activation sharing replaces a layer's real input by a shared activation of another
shape (more channels and smaller feature maps deeper in a CNN), the shared activation is
brought to the input's shape before it forms the weight update:

- method 1 (default, best in Fig. 5.1): tile the channels (concatenate copies, then crop
  to the target count) and max-pool the feature map to the target size;
- method 2: tile the channels and average-pool the feature map;
- method 3: a fixed random projection of the channels (Forward Alignment at a shape
  change, ``P`` of shape (C_shared, C_target) drawn N(0, 1/C_shared)), then average
  pooling of the feature map.

Pooling to a size ``out`` from ``n > out`` uses windows of ``r = ceil(n / out)`` with
stride ``r``; the map is first padded at its end by edge replication to ``out * r`` (so
integer ratios are plain r x r pooling, as the official code's ``max_pool2d(ratio)``).
Growing a side (``n < out``) repeats each row/column (nearest neighbour) and crops.
Reducing a channel count (rare) pools groups of adjacent channels with the method's
reducer (max for 1, mean for 2).

Shapes: NHWC -> NHWC, (N, F) -> (N, F). NHWC -> (N, F) (a dense layer fed a conv map):
exact flattening when ``H*W*C == F``; else, when ``F = s*s*C`` for an integer ``s``, the
map is pooled to (N, s, s, C) and flattened; otherwise it is globally pooled to (N, C)
and matched as a vector. (Sharing rules start a new group at a conv -> dense boundary
unless the flattening is exact, see ``_sharing.py``; Forward Alignment uses these paths.)

Token activations (N, positions..., F) -> (N, positions..., F') with the *same* position
axes (a Transformer's (B, T, d) -> (B, T, d')): the three methods act on the feature
(last) axis only, position by position: method 1 tiles the features (or max-pools groups
of adjacent features when F > F'), method 2 tiles (or average-pools), method 3 projects
by P (F, F'). Position axes are never pooled or repeated: a token activation with other
positions is not matchable (:func:`matchable`; the sharing rules then start a new group
with the layer's own input). Tokens -> (N, F): exact flattening when ``prod(positions) *
F == F'``, else global pooling over the positions, then as a vector.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

METHODS = {1: "tile + max-pool", 2: "tile + average-pool", 3: "fixed random projection"}


def validate(rule: str, method: int) -> None:
    """Raises ``ValueError`` unless ``method`` is 1, 2 or 3."""
    if isinstance(method, bool) or method not in METHODS:
        choices = ", ".join(f"{k} ({v})" for k, v in METHODS.items())
        raise ValueError(f"rule {rule!r}: match={method!r} is not valid; choose one of: {choices}")


def _reduce(x: Array, axis: int, method: int) -> Array:
    return jnp.max(x, axis=axis) if method == 1 else jnp.mean(x, axis=axis)


def resize_axis(x: Array, axis: int, out: int, method: int) -> Array:
    """Pools (max for method 1, mean otherwise) or repeats ``x`` along ``axis`` to ``out``."""
    n = x.shape[axis]
    if n == out:
        return x
    if n < out:
        reps = math.ceil(out / n)
        return jax.lax.slice_in_dim(jnp.repeat(x, reps, axis=axis), 0, out, axis=axis)
    r = math.ceil(n / out)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, out * r - n)
    x = jnp.pad(x, pad, mode="edge")
    shape = list(x.shape)
    shape[axis:axis + 1] = [out, r]
    return _reduce(x.reshape(shape), axis + 1, method)


def tile_axis(x: Array, axis: int, out: int, method: int) -> Array:
    """Concatenates copies of ``x`` along ``axis`` and crops to ``out`` (pools if fewer)."""
    n = x.shape[axis]
    if n == out:
        return x
    if n > out:
        return resize_axis(x, axis, out, method)
    reps = [1] * x.ndim
    reps[axis] = math.ceil(out / n)
    return jax.lax.slice_in_dim(jnp.tile(x, reps), 0, out, axis=axis)


def projection(key: Array, shared_shape: Sequence[int], target_shape: Sequence[int],
               dtype=jnp.float32) -> Array:
    """Method 3's fixed random matrix P (C_shared, C'), entries N(0, 1/C_shared).

    C' is the target's channel count (its feature count for vectors; the shared channel
    count when a conv map is matched to a dense input on an s x s grid).
    """
    c_in, c_out = shared_shape[-1], target_shape[-1]
    if len(shared_shape) == 4 and len(target_shape) == 2 and _dense_grid(shared_shape,
                                                                          target_shape):
        c_out = c_in
    return jax.random.normal(key, (c_in, c_out), dtype) / math.sqrt(c_in)


def _dense_grid(shared_shape: Sequence[int], target_shape: Sequence[int]) -> int:
    """s with s*s*C = F for a conv map (N, H, W, C) feeding a dense layer of F inputs, or 0."""
    f, c = target_shape[-1], shared_shape[-1]
    if f % c:
        return 0
    s = math.isqrt(f // c)
    return s if s * s * c == f else 0


def _match_channels(x: Array, out: int, method: int, proj: Array | None) -> Array:
    if method == 3:
        if proj is None or proj.shape != (x.shape[-1], out):
            raise ValueError(f"method 3 needs a projection of shape {(x.shape[-1], out)}, "
                             f"got {None if proj is None else proj.shape}")
        return jnp.dot(x, proj)
    return tile_axis(x, x.ndim - 1, out, method)


def matchable(shared_shape: Sequence[int], target_shape: Sequence[int]) -> bool:
    """Whether :func:`match` can bring an activation of ``shared_shape`` to
    ``target_shape``: equal shapes, NHWC -> NHWC, a map or tokens -> (N, F),
    (N, F) -> (N, F), or tokens with equal batch and position axes (features may differ)."""
    a, b = tuple(shared_shape), tuple(target_shape)
    if a == b:
        return True
    if not a or not b or a[0] != b[0]:
        return False
    if (len(a), len(b)) == (4, 4) or (len(a) >= 2 and len(b) == 2):
        return True
    return len(a) == len(b) >= 3 and a[:-1] == b[:-1]


def match(shared: Array, target_shape: Sequence[int], method: int = 1,
          proj: Array | None = None) -> Array:
    """Brings ``shared`` to ``target_shape`` (batch first) with dimension-matching ``method``.

    Args:
      shared: the shared (or approximate) activation: NHWC, (N, F) or tokens
        (N, positions..., F).
      target_shape: the layer input's shape (same batch size).
      method: 1, 2 or 3 (module docstring).
      proj: method 3's fixed matrix from :func:`projection` (ignored otherwise).

    Raises:
      ValueError: batch sizes differ, a vector is asked to become a map, or a bad method.
    """
    target_shape = tuple(target_shape)
    if tuple(shared.shape) == target_shape:
        return shared
    validate("dimension_matching", method)
    if shared.shape[0] != target_shape[0]:
        raise ValueError(f"batch of shared activation {shared.shape} differs from {target_shape}")
    pool = 1 if method == 1 else 2
    if shared.ndim == 4 and len(target_shape) == 4:
        x = _match_channels(shared, target_shape[3], method, proj)
        x = resize_axis(x, 1, target_shape[1], pool)
        return resize_axis(x, 2, target_shape[2], pool)
    if shared.ndim >= 3 and len(target_shape) == 2:
        if math.prod(shared.shape[1:]) == target_shape[1]:
            return shared.reshape(target_shape)
        s = _dense_grid(shared.shape, target_shape) if shared.ndim == 4 else 0
        if s:
            grid = match(shared, (shared.shape[0], s, s, shared.shape[-1]), method, proj)
            return grid.reshape(target_shape)
        shared = _reduce(shared.reshape(shared.shape[0], -1, shared.shape[-1]), 1, pool)
    if shared.ndim == 2 and len(target_shape) == 2:
        return _match_channels(shared, target_shape[1], method, proj)
    if shared.ndim == len(target_shape) >= 3 and tuple(shared.shape[:-1]) == target_shape[:-1]:
        return _match_channels(shared, target_shape[-1], method, proj)  # tokens
    raise ValueError(f"cannot match a shared activation of shape {shared.shape} to a layer "
                     f"input of shape {target_shape}; supported: NHWC->NHWC, NHWC->(N,F), "
                     "(N,F)->(N,F), tokens (N,positions...,F)->(N,F) or to the same "
                     "positions (N,positions...,F')")
