"""Per-dataset constants: shapes, classes, normalisation statistics, paper augmentation.

Normalisation constants are per-channel mean / standard deviation of the training pixels
scaled to [0, 1]. They are the values in common use (PyTorch examples and the CIFAR /
SVHN training recipes the papers follow); they were *not* re-measured here because the
TFDS data is not on this machine — pass ``mean=`` / ``std=`` to ``alearn.data.create`` to
override them. MNIST's (0.1307, 0.3081) is the PyTorch-examples value; on the bundled
``mnist5k`` training split the measured values are in docs/notes/data.md. Tiny ImageNet's
statistics are *computed* by ``python -m alearn.data.prepare_tiny_imagenet`` from its
training split and stored next to the arrays.

Default normalisation: digits (``mnist5k``, ``mnist``) are scaled to [0, 1] (the issue's
"pixels scaled to [0, 1]"; the AL thesis uses no preprocessing on MNIST); colour datasets are
standardised per channel (ASAP thesis Sec. 5.1: "All datasets in experiments are
normalized"). Default augmentation: ``crop_flip`` on CIFAR-10/100 and Tiny ImageNet (ASAP
Sec. 5.1), none on digits (no flips for digits; the AL thesis uses no augmentation on
MNIST and SVHN is not augmented in ASAP). The AL thesis' CIFAR recipe is
``augment="jitter2"``.

Text datasets (kind "text", ``alearn.data.text``): ``image_shape`` is ``(max_length,)``, the
default number of UTF-8 byte tokens per example; normalisation and augmentation do not apply.
Default lengths (bytes): ``sst2`` 256 (single sentences, mostly < 200 characters),
``ag_news_subset`` 512 (title + description, a few hundred characters), ``imdb_reviews`` 1024
(whole reviews, often longer: 1014 is the character-CNN convention of Zhang et al. 2015, so
long reviews keep their first 1024 bytes). These are literature figures, not measured here
(no text data on this machine); ``max_length=`` overrides them.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static description of a named dataset.

    Attributes:
      name: the ``alearn.data`` name.
      kind: "mnist5k", "idx", "tfds", "text", "tiny_imagenet" or "synthetic" (which reader
        builds it).
      num_classes: number of labels.
      image_shape: (H, W, C); for text (max_length,), the default tokens per example.
      mean: per-channel mean of [0, 1] pixels (length C).
      std: per-channel standard deviation of [0, 1] pixels (length C).
      normalize: default normalisation, "unit" ([0, 1]) or "standardize" ((x - mean) / std);
        "none" for text (token ids).
      augment: default augmentation policy (see ``alearn.data.augment``).
      crop_padding: zero padding of the random crop.
      tfds_name: TFDS builder name (kind "tfds").
      test_split: TFDS split used as ``"test"``.
      build_extras: extra pip packages ``tfds build`` needs for this dataset.
      text_keys: (kind "text") the TFDS text features joined by a space into one text.
    """

    name: str
    kind: str
    num_classes: int
    image_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalize: str = "standardize"
    augment: str = "none"
    crop_padding: int = 4
    tfds_name: str | None = None
    test_split: str = "test"
    build_extras: tuple[str, ...] = ()
    text_keys: tuple[str, ...] = ()


# Kinds read through ``tfds.data_source``: on disk as <data_dir>/<tfds_name>/<version>/.
TFDS_KINDS = ("tfds", "text")

_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)
# Measured on Fashion-MNIST's 60,000 training images (docs/notes/data.md).
_FASHION_MEAN, _FASHION_STD = (0.2860,), (0.3530,)

# name -> spec. Read-only: a dataset is added here in the source, not at run time.
SPECS = MappingProxyType({
    spec.name: spec
    for spec in (
        DatasetSpec("mnist5k", "mnist5k", 10, (28, 28, 1), _MNIST_MEAN, _MNIST_STD, normalize="unit"),
        DatasetSpec(
            "mnist", "tfds", 10, (28, 28, 1), _MNIST_MEAN, _MNIST_STD, normalize="unit",
            tfds_name="mnist",
        ),
        DatasetSpec(
            "fashion_mnist", "idx", 10, (28, 28, 1), _FASHION_MEAN, _FASHION_STD,
            normalize="unit",
        ),
        DatasetSpec(
            "svhn_cropped", "tfds", 10, (32, 32, 3),
            (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
            tfds_name="svhn_cropped", build_extras=("scipy",),
        ),
        DatasetSpec(
            "cifar10", "tfds", 10, (32, 32, 3),
            (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
            augment="crop_flip", tfds_name="cifar10",
        ),
        DatasetSpec(
            "cifar100", "tfds", 100, (32, 32, 3),
            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
            augment="crop_flip", tfds_name="cifar100",
        ),
        # Fallback only (ImageNet's constants): the prepared data's stats.json, computed on
        # the Tiny ImageNet training split by prepare_tiny_imagenet, takes precedence.
        DatasetSpec(
            "tiny_imagenet", "tiny_imagenet", 200, (64, 64, 3),
            (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), augment="crop_flip",
        ),
        # Text (UTF-8 byte tokens, alearn.data.text); feature names from the TFDS 4.9.10
        # builders. imdb_reviews' default config is plain_text; glue/sst2's test labels are -1.
        DatasetSpec(
            "ag_news_subset", "text", 4, (512,), (0.0,), (1.0,), normalize="none",
            tfds_name="ag_news_subset", text_keys=("title", "description"),
        ),
        DatasetSpec(
            "imdb_reviews", "text", 2, (1024,), (0.0,), (1.0,), normalize="none",
            tfds_name="imdb_reviews/plain_text", text_keys=("text",),
        ),
        DatasetSpec(
            "sst2", "text", 2, (256,), (0.0,), (1.0,), normalize="none",
            tfds_name="glue/sst2", test_split="validation", text_keys=("sentence",),
        ),
        DatasetSpec("synthetic", "synthetic", 10, (8, 8, 1), (0.0,), (1.0,), normalize="unit"),
    )
})
