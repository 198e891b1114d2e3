"""CIFAR-style VGG-16 with BatchNorm, plain ``flax.linen``.

The 13 conv layers of VGG-16 (Simonyan & Zisserman, configuration D: 64,64,M,128,128,M,
256x3,M,512x3,M,512x3,M), each conv3x3 (padding 1) - BN - ReLU, as in the common CIFAR
adaptation (e.g. kuangliu/pytorch-cifar), followed by global average pooling and a single
linear classifier. On 32x32 inputs the last feature map is 1x1, so global average pooling
is the identity and this equals the flatten-then-Linear(512) CIFAR head; on 64x64 Tiny
ImageNet it averages a 2x2 map, and ceil-mode pooling lets 28x28 MNIST reach 1x1 too.
(The Associated-Learning thesis' "VGG" is a smaller 6-conv variant of its seed code; see
docs/notes/models.md.)
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from alearn.models._common import (HE_NORMAL, activation_fn, batch_norm, check_image,
                                   max_pool_ceil, scaled)

Array = jax.Array

#: VGG-16 (configuration D): channel counts, "M" = 2x2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class VGG(nn.Module):
    """(conv3x3-BN-act)+ with max-pools per ``config``, global average pool, linear out.

    Layers: ``conv{i}`` / ``bn{i}`` for the i-th conv (i = 0..12 for VGG-16) and
    ``classifier``. A plain chain (no blocks declared).

    Attributes:
      num_classes: output units.
      config: channel counts and "M" (max-pool) markers.
      activation: name or callable.
      width_multiplier: scales every conv width.
      kernel_init: kernel initialiser (He normal).
    """

    num_classes: int
    config: Sequence[int | str] = VGG16_CONFIG
    activation: str | Callable[[Array], Array] = "relu"
    width_multiplier: float = 1.0
    kernel_init: Callable[..., Array] = HE_NORMAL

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        check_image(x, "vgg")
        act = activation_fn(self.activation)
        i = 0
        for item in self.config:
            if item == "M":
                x = max_pool_ceil(x)
                continue
            if not isinstance(item, int):
                raise ValueError(f"VGG config entries are ints or 'M', got {item!r}")
            x = nn.Conv(scaled(item, self.width_multiplier), (3, 3), padding=1,
                        use_bias=False, kernel_init=self.kernel_init, name=f"conv{i}")(x)
            x = act(batch_norm(train, f"bn{i}")(x))
            i += 1
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="classifier")(x)
