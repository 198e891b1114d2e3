"""The ASAP thesis "AlexNet": 64c3-128c3-256c3-FC1024-FC1024-FC(classes).

ASAP thesis Sec. 5.1.3: "64 Conv3x3 - 128 Conv3x3 - 256 Conv3x3 - 1024 FC - 1024 FC -
10 FC ... The stride and padding of this convolutional layers is set to 1 and 2". The
thesis says nothing about pooling or normalisation; the authors' code
(WooSunghyeon/Activation-Sharing-with-Asymmetric-Paths, ``code/convnet.py``) puts
BatchNorm + ReLU + 2x2 max-pool (ceil mode) after every conv, BatchNorm + ReLU after each
hidden FC, and a BatchNorm1d on the logits. We follow the code for BN and pooling, keep
the thesis' 3x3 kernels by default (the code uses 5x5 with padding 2: set
``kernel_size=5`` to reproduce it exactly) and make the logit BatchNorm an option
(``output_bn``, off by default). With 3x3 kernels and padding 2 a 32x32 input becomes
34 -> 17 -> 19 -> 10 -> 12 -> 6, so FC1024 sees 6*6*256 = 9216 features (28x28 MNIST also
ends at 6x6).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax

from alearn.layers import Conv, Dense, Tape
from alearn.models._common import (HE_NORMAL, activation_fn, batch_norm, check_image, flatten,
                                   max_pool_ceil, scaled)
from alearn.rules.bp import BP

Array = jax.Array


class AlexNet(nn.Module):
    """conv-BN-act-maxpool x 3 -> (FC-BN-act) x 2 -> FC out.

    Layers: ``conv{i}`` / ``bn_conv{i}`` (i = 0..2), ``fc{j}`` / ``bn_fc{j}`` (j = 0..1),
    ``classifier`` (+ ``bn_out`` when ``output_bn``). A plain chain: no block marks.

    Attributes:
      num_classes: output units.
      conv_widths: output channels of the three conv layers.
      dense_widths: hidden FC widths.
      kernel_size: conv kernel side (3 in the thesis, 5 in the authors' code).
      padding: symmetric conv padding (2 in the thesis).
      use_bn: BatchNorm after every hidden layer (as the authors' code).
      output_bn: BatchNorm on the logits (as the authors' code; off by default).
      activation: name or callable.
      width_multiplier: scales every hidden width.
      kernel_init: kernel initialiser (He normal).
    """

    num_classes: int
    conv_widths: Sequence[int] = (64, 128, 256)
    dense_widths: Sequence[int] = (1024, 1024)
    kernel_size: int = 3
    padding: int = 2
    use_bn: bool = True
    output_bn: bool = False
    activation: str | Callable[[Array], Array] = "relu"
    width_multiplier: float = 1.0
    kernel_init: Callable[..., Array] = HE_NORMAL

    @nn.compact
    def __call__(self, x: Array, *, rule: Any = BP(), train: bool = False) -> Array:
        check_image(x, "alexnet")
        act = activation_fn(self.activation)
        m = self.width_multiplier
        tape = Tape(rule, x.shape[0], self.num_classes)
        k = self.kernel_size
        for i, w in enumerate(self.conv_widths):
            x = Conv(scaled(w, m), (k, k), padding=self.padding, use_bias=not self.use_bn,
                     kernel_init=self.kernel_init, name=f"conv{i}")(x, tape)
            if self.use_bn:
                x = batch_norm(train, f"bn_conv{i}")(x)
            x = max_pool_ceil(act(x))
        x = flatten(x)
        for j, w in enumerate(self.dense_widths):
            x = Dense(scaled(w, m), use_bias=not self.use_bn, kernel_init=self.kernel_init,
                      name=f"fc{j}")(x, tape)
            if self.use_bn:
                x = batch_norm(train, f"bn_fc{j}")(x)
            x = act(x)
        x = Dense(self.num_classes, use_bias=not self.output_bn, kernel_init=self.kernel_init,
                  name="classifier")(x, tape)
        if self.output_bn:
            x = batch_norm(train, "bn_out")(x)
        return tape.finish(x)
