"""The Flax examples' MNIST CNN, plain ``flax.linen`` (no alearn layers), for ``alearn.wrap``.

Written exactly as ``examples/mnist`` in the Flax repository writes it (only the number of
classes and the widths are fields), to show and test that an unmodified Flax model learns
by any rule through :func:`alearn.wrap`. Registered in ``alearn.models`` as ``flax_cnn``
(``create`` wraps it, as every model), so ``--config.model=flax_cnn`` trains it.
"""

from __future__ import annotations

import flax.linen as nn


class FlaxCNN(nn.Module):
    """conv3x3(32) - relu - avgpool - conv3x3(64) - relu - avgpool - dense(256) - relu - dense."""

    num_classes: int = 10
    features: tuple[int, int] = (32, 64)
    hidden: int = 256

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(features=self.features[0], kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.Conv(features=self.features[1], kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))  # flatten
        x = nn.Dense(features=self.hidden)(x)
        x = nn.relu(x)
        x = nn.Dense(features=self.num_classes)(x)
        return x
