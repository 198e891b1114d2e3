"""The ASAP "AlexNet": 64c-128c-256c-FC1024-FC1024-FC(classes).

Two readings, both registered in ``alearn.models.MODELS``:

- ``alexnet`` (default, the authors' code, WooSunghyeon/Activation-Sharing-with-Asymmetric-
  Paths ``code/convnet.py``, which produced Table 5.2): **5x5** kernels, stride 1, padding
  2 (sizes kept), every conv followed by BatchNorm + ReLU + 2x2 max-pool (ceil mode),
  BatchNorm + ReLU after each hidden FC and a BatchNorm on the logits. 32x32 inputs become
  32 -> 16 -> 8 -> 4 (28x28: 28 -> 14 -> 7 -> 4), so FC1024 sees 4*4*256 = 4096 features.
- ``alexnet_thesis`` (ASAP thesis Sec. 5.1.3 text: "64 Conv3x3 - 128 Conv3x3 - 256 Conv3x3
  - 1024 FC - 1024 FC - 10 FC ... stride and padding ... 1 and 2"; silent on BN/pooling,
  which we take from the code): **3x3** kernels, padding 2 (each conv grows a side by 2:
  32 -> 34 -> 17 -> 19 -> 10 -> 12 -> 6, flatten 9216), no BatchNorm on the logits.

The class defaults are the authors' code; ``kernel_size`` / ``output_bn`` select the other.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from alearn.models._common import (HE_NORMAL, activation_fn, batch_norm, check_image, flatten,
                                   max_pool_ceil, scaled)

Array = jax.Array


class AlexNet(nn.Module):
    """conv-BN-act-maxpool x 3 -> (FC-BN-act) x 2 -> FC out.

    Layers: ``conv{i}`` / ``bn_conv{i}`` (i = 0..2), ``fc{j}`` / ``bn_fc{j}`` (j = 0..1),
    ``classifier`` (+ ``bn_out`` when ``output_bn``). A plain chain (no blocks declared).

    Attributes:
      num_classes: output units.
      conv_widths: output channels of the three conv layers.
      dense_widths: hidden FC widths.
      kernel_size: conv kernel side (5 in the authors' code, the default; 3 in the thesis).
      padding: symmetric conv padding (2 in both).
      use_bn: BatchNorm after every hidden layer (as the authors' code).
      output_bn: BatchNorm on the logits (the authors' code: on by default; off in
        ``alexnet_thesis``).
      activation: name or callable.
      width_multiplier: scales every hidden width.
      kernel_init: kernel initialiser (He normal).
    """

    num_classes: int
    conv_widths: Sequence[int] = (64, 128, 256)
    dense_widths: Sequence[int] = (1024, 1024)
    kernel_size: int = 5
    padding: int = 2
    use_bn: bool = True
    output_bn: bool = True
    activation: str | Callable[[Array], Array] = "relu"
    width_multiplier: float = 1.0
    kernel_init: Callable[..., Array] = HE_NORMAL

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        check_image(x, "alexnet")
        act = activation_fn(self.activation)
        m = self.width_multiplier
        k = self.kernel_size
        for i, w in enumerate(self.conv_widths):
            x = nn.Conv(scaled(w, m), (k, k), padding=self.padding, use_bias=not self.use_bn,
                        kernel_init=self.kernel_init, name=f"conv{i}")(x)
            if self.use_bn:
                x = batch_norm(train, f"bn_conv{i}")(x)
            x = max_pool_ceil(act(x))
        x = flatten(x)
        for j, w in enumerate(self.dense_widths):
            x = nn.Dense(scaled(w, m), use_bias=not self.use_bn, kernel_init=self.kernel_init,
                         name=f"fc{j}")(x)
            if self.use_bn:
                x = batch_norm(train, f"bn_fc{j}")(x)
            x = act(x)
        x = nn.Dense(self.num_classes, use_bias=not self.output_bn,
                     kernel_init=self.kernel_init, name="classifier")(x)
        if self.output_bn:
            x = batch_norm(train, "bn_out")(x)
        return x
