"""ResNets with basic blocks (He et al. 2016), plain ``flax.linen``.

One class covers the papers' ResNets:

- ResNet-20 / ResNet-32 (AL thesis, CIFAR style): 3 stages of 3 / 5 blocks, widths
  16/32/64, conv3x3 stem.
- ResNet-18 / ResNet-34 (ASAP thesis, "described by He et al."): 4 stages of [2,2,2,2] /
  [3,4,6,3] blocks, widths 64/128/256/512, a conv3x3 stride-1 stem for 32x32 inputs and no
  max-pool (the CIFAR adaptation used by the authors' code).
- ResNet-18 without shortcuts ("nsc", ASAP thesis Sec. 5.1.3): the same conv layers, the
  residual additions (and projection shortcuts) removed.

Block (post-activation, as He et al. and both authors' codes)::

    h = act(BN(conv3x3(x, stride s)))      # conv1 / bn1
    h = BN(conv3x3(h))                     # conv2 / bn2
    sc = x, or BN(conv1x1(x, stride s))    # shortcut_conv / shortcut_bn when shape changes
    out = act(h + sc)                      # act(h) without shortcuts

Projection ("option B") shortcuts are used wherever the shape changes (first block of a
down-sampling stage), for all depths; identity elsewhere. The stride-2 conv is the first of
the stage's first block. Global average pooling precedes the linear classifier, so any
input side works (28, 32, 64).

What the papers need beyond the forward pass is declared to ``alearn.wrap`` by
:func:`wrap_spec` (``alearn.models.create`` applies it), not written here: the blocks
(``stage*_block*``: activation-sharing groups, DFA receivers at their inputs) and a DFA
receiver on the last block's output. With them, DFA receives ``δ_L D`` exactly where the
ASAP authors' code puts its ``Feedback_Receiver``s (after the stem, after each block's
first activation, which is conv2's own input, and on every block output).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from alearn.models._common import HE_NORMAL, activation_fn, batch_norm, check_image, scaled

Array = jax.Array


class BasicBlock(nn.Module):
    """Two conv3x3-BN layers with a residual shortcut.

    Layer order inside a block (the order in which activation-sharing rules meet them):
    conv1, conv2, then shortcut_conv when present.

    Attributes:
      features: output channels.
      strides: stride of conv1 (and of the projection shortcut).
      shortcut: add the residual shortcut (False for the "nsc" ResNet).
      activation: name or callable.
      kernel_init: kernel initialiser.
    """

    features: int
    strides: int = 1
    shortcut: bool = True
    activation: str | Callable[[Array], Array] = "relu"
    kernel_init: Callable[..., Array] = HE_NORMAL

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        act = activation_fn(self.activation)
        s = (self.strides, self.strides)
        h = nn.Conv(self.features, (3, 3), strides=s, padding=1, use_bias=False,
                    kernel_init=self.kernel_init, name="conv1")(x)
        h = act(batch_norm(train, "bn1")(h))
        h = nn.Conv(self.features, (3, 3), padding=1, use_bias=False,
                    kernel_init=self.kernel_init, name="conv2")(h)
        h = batch_norm(train, "bn2")(h)
        if not self.shortcut:
            return act(h)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), strides=s, padding=0, use_bias=False,
                        kernel_init=self.kernel_init, name="shortcut_conv")(x)
            x = batch_norm(train, "shortcut_bn")(x)
        return act(h + x)


class ResNet(nn.Module):
    """conv3x3-BN-act stem, stages of :class:`BasicBlock`, global average pool, linear out.

    Parameter tree: ``stem_conv``, ``stem_bn``, ``stage{s}_block{b}`` (s, b from 0) each
    with ``conv1, bn1, conv2, bn2[, shortcut_conv, shortcut_bn]``, ``classifier`` (+
    ``bn_out`` when ``output_bn``). The stem and the classifier are outside any block.

    Attributes:
      num_classes: output units.
      stage_sizes: blocks per stage.
      widths: channels per stage (the stem has ``widths[0]``).
      shortcut: residual shortcuts on (False: "no shortcut" variant).
      output_bn: BatchNorm on the logits (the ASAP authors' code has one; off by default).
      activation: name or callable.
      width_multiplier: scales every width.
      kernel_init: kernel initialiser (He normal).
    """

    num_classes: int
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    shortcut: bool = True
    output_bn: bool = False
    activation: str | Callable[[Array], Array] = "relu"
    width_multiplier: float = 1.0
    kernel_init: Callable[..., Array] = HE_NORMAL

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        check_image(x, "resnet")
        if len(self.stage_sizes) != len(self.widths):
            raise ValueError(
                f"stage_sizes {tuple(self.stage_sizes)} and widths {tuple(self.widths)} must "
                "have the same length"
            )
        act = activation_fn(self.activation)
        m = self.width_multiplier
        x = nn.Conv(scaled(self.widths[0], m), (3, 3), padding=1, use_bias=False,
                    kernel_init=self.kernel_init, name="stem_conv")(x)
        x = act(batch_norm(train, "stem_bn")(x))
        for s, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                x = BasicBlock(scaled(w, m), strides=stride, shortcut=self.shortcut,
                               activation=self.activation, kernel_init=self.kernel_init,
                               name=f"stage{s}_block{b}")(x, train=train)
        x = x.mean(axis=(1, 2))
        x = nn.Dense(self.num_classes, use_bias=not self.output_bn,
                     kernel_init=self.kernel_init, name="classifier")(x)
        if self.output_bn:
            x = batch_norm(train, "bn_out")(x)
        return x


def wrap_spec(model: ResNet) -> dict:
    """``alearn.wrap`` arguments of a :class:`ResNet`: its blocks, and a DFA receiver on
    the last block's output (before the global pooling, as the authors' code)."""
    last = f"stage{len(model.stage_sizes) - 1}_block{model.stage_sizes[-1] - 1}"
    return {"blocks": ("stage*_block*",), "receivers": (last,)}
