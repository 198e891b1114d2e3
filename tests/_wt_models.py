"""Tiny dense and conv nets for the weight-transport rule tests."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from alearn._layers import Conv, Dense, Tape, initializers
from _paper_models import MLP
from alearn.rules import BP

NUM_CLASSES = 5
# lecun_normal (the layers' default) drawn flat: the same values, compiled several times
# faster (alearn/_layers/initializers.py).
LECUN = initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


class TinyCNN(nn.Module):
    """conv3x3(4) - relu - conv3x3/2(6) - relu - flatten - dense(classes)."""

    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x: jax.Array, *, rule: Any = BP(), train: bool = False) -> jax.Array:
        del train
        tape = Tape(rule, x.shape[0], self.num_classes)
        x = nn.relu(Conv(4, (3, 3), kernel_init=LECUN)(x, tape))
        x = nn.relu(Conv(6, (3, 3), strides=(2, 2), padding=1, kernel_init=LECUN)(x, tape))
        x = x.reshape(x.shape[0], -1)
        return tape.finish(Dense(self.num_classes)(x, tape))


def mlp(widths=(16, 12)) -> nn.Module:
    return MLP(num_classes=NUM_CLASSES, widths=widths)


def data(kind: str, seed: int = 0, batch: int = 8):
    """(model, x, y) for kind "dense" or "conv"."""
    kx, ky = jax.random.split(jax.random.key(seed))
    y = jax.random.randint(ky, (batch,), 0, NUM_CLASSES)
    if kind == "dense":
        return mlp(), jax.random.normal(kx, (batch, 10)), y
    return TinyCNN(), jax.random.normal(kx, (batch, 6, 6, 3)), y


def set_leaf(tree: dict, path: tuple[str, ...], value) -> dict:
    """A copy of nested dict ``tree`` with ``tree[path] = value``."""
    out = dict(tree)
    if len(path) == 1:
        out[path[0]] = value
    else:
        out[path[0]] = set_leaf(tree[path[0]], path[1:], value)
    return out


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree_util.tree_map(
        lambda u, v: None if jnp.allclose(u, v, rtol=rtol, atol=atol) else (_ for _ in ()).throw(
            AssertionError(f"max |diff| {float(jnp.max(jnp.abs(u - v)))}")), a, b)
