"""The dataset object: deterministic epochs of normalised, augmented numpy batches.

A ``Dataset`` holds one ``Source`` per split (anything with ``__len__`` and
``gather(indices) -> (raw_images, labels)``), the normalisation constants and the
augmentation policy. ``batches`` is a pure function of ``(seed, epoch, split, arguments)``:
the permutation of an epoch comes from ``np.random.default_rng([seed, epoch, split, 0])`` and
the augmentation of batch ``b`` from ``default_rng([seed, epoch, split, 1, b])``, so resuming
at epoch ``e`` (or at any batch of it) reproduces the same data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np

from alearn.data import augment as augment_lib

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trainer need to know about a dataset.

    Attributes:
      name: the dataset's name (with its validation fraction, if any).
      num_classes: number of labels.
      image_shape: the per-example shape of ``batch["image"]``: (H, W, C) for images, (T,)
        for text (T = max_length tokens).
      num_train, num_test: examples per split.
      vocab_size: 0 for images; for text the number of token ids (ids are in
        [0, vocab_size), 0 is padding; ``alearn.data.text``).
      input_dtype: dtype of ``batch["image"]``: "float32" (pixels) or "int32" (token ids);
        a trainer initialises its model on ``np.zeros((1, *image_shape), input_dtype)``.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, ...]
    num_train: int
    num_test: int
    vocab_size: int = 0
    input_dtype: str = "float32"

    @property
    def max_length(self) -> int | None:
        """Tokens per sequence for text (``image_shape[0]``), None for images."""
        return self.image_shape[0] if self.vocab_size else None


class Source(Protocol):
    """One split's raw examples, gathered by index."""

    def __len__(self) -> int: ...

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (images (B, H, W, C) uint8 in [0, 255] or float32 in [0, 1], labels (B,))."""
        ...


class ArraySource:
    """A split held in memory (or memory-mapped) as arrays."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images[indices], np.asarray(self.labels[indices], dtype=np.int32)


def _check_nonneg_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


PIXEL_MEAN_MODES = ("pixel_mean", "pixel_mean_per_image")


def pixel_mean(source: "Source", chunk: int = 10000) -> np.ndarray:
    """Per-pixel mean (H, W, C) of a split's images scaled to [0, 1] (float64 sums)."""
    n, total = len(source), None
    for start in range(0, n, chunk):
        images, _ = source.gather(np.arange(start, min(n, start + chunk)))
        x = np.asarray(images, np.float64)
        x = x / 255.0 if np.asarray(images).dtype == np.uint8 else x
        part = x.sum(axis=0)
        total = part if total is None else total + part
    return (total / max(n, 1)).astype(np.float32)


class Dataset:
    """Train / test splits with the paper preprocessing; see ``alearn.data.create``.

    ``pixel_norm``: ``""`` (default) maps raw pixels by the per-channel ``mean`` / ``std``
    and augments raw pixels first; ``"pixel_mean"`` subtracts the per-pixel mean of the
    training images (pixels in [0, 1]; the AL authors' MNIST code); ``"pixel_mean_per_image"``
    subtracts it, augments the mean-subtracted floats, then standardises every image
    (train and test; the AL authors' CIFAR code).

    Token data (``info.vocab_size > 0``): the sources give integer ids (B, T), batches carry
    them as int32 and there is no normalisation or augmentation (``augment`` must be
    "none" and ``pixel_norm`` "").
    """

    def __init__(
        self,
        info: DatasetInfo,
        sources: Mapping[str, Source],
        *,
        seed: int = 0,
        augment: str = "none",
        crop_padding: int = 4,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        pixel_norm: str = "",
        vocabulary=None,
    ):
        if augment not in augment_lib.POLICIES:
            raise ValueError(
                f"unknown augmentation policy {augment!r}; choose one of: "
                f"{', '.join(augment_lib.POLICIES)}"
            )
        if info.vocab_size and (augment != "none" or pixel_norm):
            raise ValueError(f"dataset {info.name!r} holds token ids: augmentation / pixel "
                             f"normalisation do not apply (got augment={augment!r}, "
                             f"pixel_norm={pixel_norm!r})")
        self.info = info
        self.vocabulary = vocabulary  # text with tokenizer="words": its word vocabulary
        self.seed = _check_nonneg_int("seed", seed)
        self.augment_policy = augment
        self.crop_padding = _check_nonneg_int("crop_padding", crop_padding)
        channels = info.image_shape[-1]
        mean = np.broadcast_to(np.asarray(mean, np.float32), (channels,))
        std = np.broadcast_to(np.asarray(std, np.float32), (channels,))
        if np.any(std <= 0):
            raise ValueError(f"std must be positive, got {std.tolist()}")
        self.mean, self.std = tuple(mean.tolist()), tuple(std.tolist())
        # x_normalised = raw * scale + shift, with raw in [0, 255] (uint8) or [0, 1] (float).
        self._scale = (1.0 / std).astype(np.float32)
        self._shift = (-mean / std).astype(np.float32)
        self._sources = dict(sources)
        if pixel_norm and pixel_norm not in PIXEL_MEAN_MODES:
            raise ValueError(f"unknown pixel_norm {pixel_norm!r}; choose one of: '', "
                             f"{', '.join(PIXEL_MEAN_MODES)}")
        self.pixel_norm = pixel_norm
        self.pixel_mean = pixel_mean(self._source("train")) if pixel_norm else None

    def __repr__(self) -> str:
        return (
            f"Dataset({self.info}, seed={self.seed}, augment={self.augment_policy!r}, "
            f"mean={self.mean}, std={self.std})"
        )

    def _source(self, split: str) -> Source:
        if split not in self._sources:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        return self._sources[split]

    def num_examples(self, split: str) -> int:
        """Number of examples in ``split``."""
        return len(self._source(split))

    def num_batches(self, split: str, batch_size: int, drop_remainder: bool | None = None) -> int:
        """Batches per epoch of ``split`` (default ``drop_remainder``: True for train)."""
        n = self.num_examples(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if drop_remainder is None:
            drop_remainder = split == "train"
        if drop_remainder and batch_size > n:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {n} examples of split {split!r} of "
                f"{self.info.name!r} with drop_remainder=True: the epoch would be empty"
            )
        return n // batch_size if drop_remainder else -(-n // batch_size)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Maps raw pixels (uint8 [0, 255] or float [0, 1]) to the model's float32 input.

        ``(raw / 255 - mean) / std`` per channel (``raw - mean) / std`` for float input). The
        per-channel constants are tiled along W so numpy's inner loop runs over W*C values
        instead of C (about 7x faster for RGB).
        """
        b, h, w, c = raw.shape
        scale = self._scale / np.float32(255.0) if raw.dtype == np.uint8 else self._scale
        out = raw.reshape(b * h, w * c).astype(np.float32)
        out *= np.tile(scale, w)
        out += np.tile(self._shift, w)
        return out.reshape(b, h, w, c)

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        epoch: int = 0,
        shuffle: bool | None = None,
        drop_remainder: bool | None = None,
        augment: bool | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """One epoch of ``{"image": float32 (B, H, W, C), "label": int32 (B,)}`` batches
        (text: ``"image"`` is int32 (B, T) token ids).

        Defaults: train shuffles, drops the remainder and augments with the dataset's
        policy; test keeps the file order and the remainder and does not augment. Without
        ``drop_remainder`` every example appears exactly once per epoch.
        """
        epoch = _check_nonneg_int("epoch", epoch)
        is_train = split == "train"
        source = self._source(split)
        num = self.num_batches(split, batch_size, drop_remainder)
        shuffle = is_train if shuffle is None else bool(shuffle)
        augment = is_train if augment is None else bool(augment)
        split_id = SPLITS.index(split)
        n = len(source)
        if shuffle:
            order = np.random.default_rng([self.seed, epoch, split_id, 0]).permutation(n)
        else:
            order = np.arange(n)
        return self._iterate(source, order, batch_size, num, epoch, split_id, augment)

    def _iterate(self, source, order, batch_size, num, epoch, split_id, augment):
        for b in range(num):
            idx = order[b * batch_size:(b + 1) * batch_size]
            images, labels = source.gather(idx)
            if self.info.vocab_size:  # token ids: no pixel preprocessing
                yield {"image": np.asarray(images, np.int32),
                       "label": np.asarray(labels, np.int32)}
                continue
            if self.pixel_norm:  # the AL code: subtract the pixel mean, then augment
                images = self._subtract_pixel_mean(images)
            if augment and self.augment_policy != "none":
                rng = np.random.default_rng([self.seed, epoch, split_id, 1, b])
                images = augment_lib.apply_policy(
                    self.augment_policy, images, rng, crop_padding=self.crop_padding
                )
            if self.pixel_norm == "pixel_mean_per_image":
                images = augment_lib.per_image_standardize(images)
            elif not self.pixel_norm:
                images = self.normalize(images)
            yield {"image": np.asarray(images, np.float32),
                   "label": np.asarray(labels, np.int32)}

    def _subtract_pixel_mean(self, raw: np.ndarray) -> np.ndarray:
        x = np.asarray(raw, np.float32)
        if np.asarray(raw).dtype == np.uint8:
            x = x / np.float32(255.0)
        return x - self.pixel_mean
