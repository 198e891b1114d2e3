"""``synthetic``: a small learnable dataset for tests (class prototypes + Gaussian noise).

Class ``c`` has a prototype ``mu_c ~ N(0, 1)`` of shape ``image_shape``; an example of class
``c`` is ``mu_c + noise * N(0, 1)``. Labels are balanced (``i mod num_classes``, shuffled).
Everything is drawn from ``np.random.default_rng(data_seed)`` — the same dataset for every
shuffling ``seed`` — so a linear classifier separates the classes when ``noise`` is small
relative to ``sqrt(prod(image_shape))``. Images are float32 and are used as given
(normalisation "unit" is the identity on float data).
"""

from __future__ import annotations

import numpy as np

from alearn.data.dataset import ArraySource


def make_sources(
    *,
    num_classes: int = 10,
    image_shape: tuple[int, int, int] = (8, 8, 1),
    num_train: int = 512,
    num_test: int = 256,
    noise: float = 1.0,
    data_seed: int = 0,
) -> dict[str, ArraySource]:
    """Builds the train / test arrays (deterministic in ``data_seed``)."""
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (H, W, C) of positive ints, got {image_shape}")
    if num_classes < 2 or num_train < 1 or num_test < 1 or noise < 0:
        raise ValueError(
            f"need num_classes >= 2, num_train >= 1, num_test >= 1, noise >= 0; got "
            f"{num_classes}, {num_train}, {num_test}, {noise}"
        )
    rng = np.random.default_rng(data_seed)
    prototypes = rng.standard_normal((num_classes, *image_shape)).astype(np.float32)

    def split(n: int) -> ArraySource:
        labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
        images = prototypes[labels] + np.float32(noise) * rng.standard_normal(
            (n, *image_shape), dtype=np.float32
        )
        return ArraySource(images, labels)

    return {"train": split(num_train), "test": split(num_test)}
