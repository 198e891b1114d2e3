"""Local losses that need the labels, inside a rule (private helper of ``alearn.local``).

A rule never sees the labels: the loss is ``alearn.cross_entropy`` of the model output,
computed outside the model. But the cotangent that reaches the logits is
``δ_L = (softmax(out) − y) / N``, so in the backward pass the one-hot labels are
``y = softmax(out) − N δ_L``. :func:`attach` ties a tuple of local heads (their inputs
and parameters) to the logits with an identity custom-VJP; its backward recovers ``y``
and returns, for every head, the gradient of its own loss ``fn(inputs, params, y)``.
That gradient then flows into the network at the head's input (the local error) and
into the head's parameters (feedback variables of the layer that hosts it).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp

from alearn.rules import dimension_matching as dm

Array = jax.Array


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def attach(logits: Array, heads: tuple, fns: tuple[Callable, ...]) -> Array:
    """Identity on ``logits``; backward gives each head ``grad fns[i](*heads[i], y)``.

    Args:
      logits: the model output (mean softmax cross-entropy is assumed for the loss).
      heads: tuple of (inputs, params) pytrees, one per local head.
      fns: static, hashable local losses ``fn(inputs, params, y_onehot) -> scalar``.
    """
    del heads, fns
    return logits


def _fwd(logits, heads, fns):
    del fns
    return logits, (jax.nn.softmax(logits), heads)


def _bwd(fns, res, delta):
    p, heads = res
    y = p - delta.shape[0] * delta
    grads = tuple(jax.grad(fn, argnums=(0, 1))(h, w, y) for fn, (h, w) in zip(fns, heads))
    return delta, grads


attach.defvjp(_fwd, _bwd)


def pool_features(h: Array, max_features: int) -> Array:
    """Average-pools a NHWC map to at most ``max_features`` values per example, flattened.

    The side s is the largest with s*s*C <= max_features (at least 1); vectors pass.
    """
    if h.ndim == 2:
        return h
    c = h.shape[-1]
    s = max(1, min(h.shape[1], math.isqrt(max(1, max_features // c))))
    h = dm.resize_axis(h, 1, s, 2)
    h = dm.resize_axis(h, 2, min(s, h.shape[2]), 2)
    return h.reshape(h.shape[0], -1)


def pooled_size(in_shape: tuple[int, ...], max_features: int) -> int:
    """Length of :func:`pool_features` for inputs of ``in_shape``."""
    spec = jax.ShapeDtypeStruct(in_shape, jnp.float32)
    return int(jax.eval_shape(lambda h: pool_features(h, max_features), spec).shape[-1])


def cross_entropy(logits: Array, y: Array) -> Array:
    """Mean softmax cross-entropy against one-hot (or soft) targets ``y``."""
    return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), axis=-1))
