"""Tiny models for the activation-sharing tests (not public API)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from alearn._layers import Conv, Dense, Tape, initializers
from alearn.rules.bp import BP

Array = jax.Array
# lecun_normal (the layers' default) drawn flat: the same values, compiled several times
# faster (alearn/_layers/initializers.py), which dominated these tests' model inits.
LECUN = initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


class TinyResNet(nn.Module):
    """stem conv -> residual blocks (conv-relu-conv + shortcut) -> global pool -> dense.

    ``probe`` (optional) is added to the second conv's output of the first block, so that
    ``grad`` w.r.t. it is the error δ at that layer's output. ``strides`` per block; a
    block with stride 2 or more channels has a 1x1 projection shortcut.
    """

    num_classes: int = 3
    widths: tuple[int, ...] = (4, 4, 8)
    strides: tuple[int, ...] = (1, 1, 2)

    @nn.compact
    def __call__(self, x: Array, *, rule: Any = BP(), train: bool = False,
                 probe: Array | None = None) -> Array:
        del train
        tape = Tape(rule, x.shape[0], self.num_classes)
        h = nn.relu(Conv(self.widths[0], (3, 3), kernel_init=LECUN)(x, tape))
        for i, (w, s) in enumerate(zip(self.widths, self.strides)):
            tape.block(h)
            z = nn.relu(Conv(w, (3, 3), strides=(s, s), kernel_init=LECUN)(h, tape))
            z = Conv(w, (3, 3), kernel_init=LECUN)(z, tape)
            if i == 0 and probe is not None:
                z = z + probe
            short = h
            if s != 1 or h.shape[-1] != w:
                short = Conv(w, (1, 1), strides=(s, s), use_bias=False,
                             kernel_init=LECUN)(h, tape)
            h = nn.relu(z + short)
        h = h.mean(axis=(1, 2))
        return tape.finish(Dense(self.num_classes)(h, tape))


class TinyCNN(nn.Module):
    """conv -> pool -> conv -> conv -> flatten -> dense -> dense (no block marks)."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x: Array, *, rule: Any = BP(), train: bool = False) -> Array:
        del train
        tape = Tape(rule, x.shape[0], self.num_classes)
        h = nn.relu(Conv(4, (3, 3), kernel_init=LECUN)(x, tape))
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = nn.relu(Conv(8, (3, 3), kernel_init=LECUN)(h, tape))
        h = nn.relu(Conv(8, (3, 3), strides=(2, 2), kernel_init=LECUN)(h, tape))
        h = h.reshape(h.shape[0], -1)
        h = nn.relu(Dense(6)(h, tape))
        return tape.finish(Dense(self.num_classes)(h, tape))
