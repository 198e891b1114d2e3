"""The Associated-Learning thesis CNN (14 layers), plain ``flax.linen``.

AL thesis Sec. 3.2.1: "The first 4 are convolutional layers with a size of 3x3x32 ...
followed by 4 convolutional layers with a size of 3x3x64 ..., followed by a fully connected
layer with 1280 neurons, followed by 4 fully connected layers with 256 neurons in each
layer, and ending with a fully connected layer with 10 neurons."

The thesis names no pooling; the authors' seed code (SamYWK/Associated_Learning,
``MNIST/models.py``, BP baseline ``CNN``) down-samples with the LAST conv of each group
(stride 2, "same" padding), uses ReLU for BP (ELU inside AL's forward functions), no
batch normalisation and He-normal kernels. We follow it: 28x28 -> 14x14 -> 7x7, and the
flattened 7*7*64 = 3136 features feed FC1280.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from alearn.models._common import HE_NORMAL, activation_fn, check_image, flatten, scaled

Array = jax.Array


class CNN(nn.Module):
    """conv3x3 x 8 (strides ``conv_strides``) -> FC ``dense_widths`` -> FC out.

    Layers are named ``conv{i}`` (i = 0..7), ``fc{j}`` (j = 0..4) and ``classifier``. No
    batch normalisation and a plain chain: rules that group layers count them.

    Attributes:
      num_classes: output units.
      conv_widths: output channels of the conv layers.
      conv_strides: stride of each conv layer (same length as ``conv_widths``).
      dense_widths: hidden fully connected widths.
      activation: name or callable ("relu" for BP as in the thesis, "elu" for AL's f_i).
      width_multiplier: scales every hidden width.
      kernel_init: kernel initialiser (He normal).
    """

    num_classes: int
    conv_widths: Sequence[int] = (32, 32, 32, 32, 64, 64, 64, 64)
    conv_strides: Sequence[int] = (1, 1, 1, 2, 1, 1, 1, 2)
    dense_widths: Sequence[int] = (1280, 256, 256, 256, 256)
    activation: str | Callable[[Array], Array] = "relu"
    width_multiplier: float = 1.0
    kernel_init: Callable[..., Array] = HE_NORMAL

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        del train
        check_image(x, "cnn")
        if len(self.conv_strides) != len(self.conv_widths):
            raise ValueError(
                f"conv_strides {tuple(self.conv_strides)} must have one entry per conv layer "
                f"({len(self.conv_widths)} in conv_widths)"
            )
        act = activation_fn(self.activation)
        m = self.width_multiplier
        for i, (w, s) in enumerate(zip(self.conv_widths, self.conv_strides)):
            conv = nn.Conv(scaled(w, m), (3, 3), strides=(s, s), padding="SAME",
                           kernel_init=self.kernel_init, name=f"conv{i}")
            x = act(conv(x))
        x = flatten(x)
        for j, w in enumerate(self.dense_widths):
            x = act(nn.Dense(scaled(w, m), kernel_init=self.kernel_init, name=f"fc{j}")(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="classifier")(x)
