"""Batch augmentations used by the papers, vectorised numpy on a whole batch.

Every random choice comes from an explicit ``np.random.Generator`` (the dataset derives it
from ``(seed, epoch, batch)``), so an epoch can be replayed exactly. Augmentations act on
raw pixels *before* normalisation, as torchvision's ``RandomCrop(padding=p)`` followed by
``Normalize`` does: the zero fill is a black pixel, not the channel mean.

Policies (the ``augment=`` option of ``alearn.data.create``):

* ``"none"``: identity.
* ``"flip"``: horizontal flip with probability 1/2.
* ``"crop"``: random crop of the original size from the image zero-padded by ``padding``
    pixels on each side (equivalently a translation by ``dy, dx`` in ``[-p, p]``).
* ``"crop_flip"``: crop then flip — ASAP thesis Sec. 5.1 on CIFAR-10/100 and Tiny ImageNet
    ("random crop and random horizontal flip"; padding 4 as in the usual CIFAR recipe).
* ``"jitter2"``: random shift by up to 2 pixels with zero fill, no flip — the Associated
    Learning thesis *text* on CIFAR ("2-pixel jittering", Sec. 3.2.2). This is ``"crop"``
    with padding 2.
* ``"crop_flip_contrast"``: crop (padding ``crop_padding``, 4 in the code), flip, then
    contrast with a factor uniform in [0.2, 1.8] per image (``tf.image.random_contrast``:
    ``(x - m_c) * f + m_c`` with ``m_c`` the image's channel mean) — the AL authors' CIFAR
    code. Used with ``normalize="pixel_mean_per_image"`` (``alearn.data.create``), the
    augmentation runs on mean-subtracted floats, as in that code (the crop's zero fill is
    then the mean pixel), and every image is standardised afterwards.
"""

from __future__ import annotations

import numpy as np

POLICIES = ("none", "flip", "crop", "crop_flip", "jitter2", "crop_flip_contrast")
CONTRAST_RANGE = (0.2, 1.8)


def translate(images: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Shifts each image by its own integer offset, filling uncovered pixels with zeros.

    ``out[b, i, j] = images[b, i - dy[b], j - dx[b]]`` where that index is inside the image,
    else 0. A random crop of size (H, W) from the image padded by ``p`` pixels is exactly
    ``translate`` with ``dy, dx`` uniform in ``[-p, p]``.

    Args:
        images: (B, H, W, C) batch, any dtype.
        dy: (B,) integer vertical shifts (positive moves content down).
        dx: (B,) integer horizontal shifts (positive moves content right).

    Returns:
        The shifted batch, same shape and dtype.
    """
    images = np.asarray(images)
    b, h, w, _ = images.shape
    dy = np.asarray(dy, dtype=np.int64).reshape(b)
    dx = np.asarray(dx, dtype=np.int64).reshape(b)
    p = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    if p == 0:
        return images.copy()
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    # All (H, W) windows of the padded batch as a strided view (B, 2p+1, 2p+1, C, H, W); the
    # output takes window (p - dy, p - dx): output row i reads padded row i + p - dy.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))
    picked = windows[np.arange(b), p - dy, p - dx]  # (B, C, H, W): one gather, no Python loop
    return np.ascontiguousarray(picked.transpose(0, 2, 3, 1))


def random_translate(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop with zero padding ``max_shift`` (= random shift in ``[-max_shift, max_shift]``)."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    b = images.shape[0]
    dy = rng.integers(-max_shift, max_shift + 1, size=b)
    dx = rng.integers(-max_shift, max_shift + 1, size=b)
    return translate(images, dy, dx)


def random_hflip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reverses the columns (W axis) of each image independently with probability 1/2."""
    flip = np.flatnonzero(rng.random(images.shape[0]) < 0.5)
    out = np.array(images, copy=True, order="C")
    b, h, w, c = out.shape
    # Whole pixels (C values) as one opaque item: the column reversal moves W items per row
    # instead of W*C scalars (1.5x faster on RGB).
    pixels = out.reshape(b, h, w * c).view(np.dtype((np.void, c * out.itemsize)))
    pixels[flip] = pixels[flip, :, ::-1]
    return out


def adjust_contrast(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``(x - m) * f + m`` per image, ``m`` its per-channel mean (tf.image.adjust_contrast)."""
    x = np.asarray(images, np.float32)
    m = x.mean(axis=(1, 2), keepdims=True)
    f = np.asarray(factors, np.float32).reshape(-1, 1, 1, 1)
    return (x - m) * f + m


def random_contrast(images: np.ndarray, rng: np.random.Generator,
                    lower: float = CONTRAST_RANGE[0], upper: float = CONTRAST_RANGE[1]
                    ) -> np.ndarray:
    """Contrast factor uniform in ``[lower, upper)`` per image (tf.image.random_contrast)."""
    if not 0 <= lower <= upper:
        raise ValueError(f"need 0 <= lower <= upper, got lower={lower}, upper={upper}")
    return adjust_contrast(images, rng.uniform(lower, upper, size=images.shape[0]))


def per_image_standardize(images: np.ndarray) -> np.ndarray:
    """``(x - mean) / max(std, 1/sqrt(N))`` per image over its N = H*W*C values.

    tf.image.per_image_standardization (the AL authors' CIFAR code, train and test).
    """
    x = np.asarray(images, np.float32)
    n = np.prod(x.shape[1:])
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.maximum(std, np.float32(1.0 / np.sqrt(n)))


def apply_policy(
        policy: str, images: np.ndarray, rng: np.random.Generator, *, crop_padding: int = 4
) -> np.ndarray:
    """Applies the named augmentation ``policy`` (see module docstring) to a raw batch."""
    if policy == "none":
        return images
    if policy == "flip":
        return random_hflip(images, rng)
    if policy == "crop":
        return random_translate(images, crop_padding, rng)
    if policy == "crop_flip":
        return random_hflip(random_translate(images, crop_padding, rng), rng)
    if policy == "jitter2":
        return random_translate(images, 2, rng)
    if policy == "crop_flip_contrast":
        return random_contrast(random_hflip(random_translate(images, crop_padding, rng), rng),
                               rng)
    raise ValueError(f"unknown augmentation policy {policy!r}; choose one of: {', '.join(POLICIES)}")
