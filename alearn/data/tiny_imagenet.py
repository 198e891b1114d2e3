"""Tiny ImageNet from its prepared on-disk arrays (TFDS 4.9.10 has no Tiny ImageNet builder).

Layout under ``<data_dir>/tiny_imagenet/`` (written by
``python -m alearn.data.prepare_tiny_imagenet``):

* ``train_images.npy`` uint8 (100000, 64, 64, 3), ``train_labels.npy`` int32 (100000,)
* ``test_images.npy`` uint8 (10000, 64, 64, 3), ``test_labels.npy`` int32 (10000,) — the
  official labelled *validation* set (the official test set has no labels); this is the
  100,000 / 10,000 split the ASAP thesis reports (Sec. 5.1).
* ``wnids.txt``: the class WordNet ids, line ``i`` = label ``i`` (sorted order).
* ``stats.json``: ``{"mean": [r, g, b], "std": [r, g, b]}`` of the [0, 1] training pixels.

The ``.npy`` files are memory-mapped, so a batch reads only its rows.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex

import numpy as np

from alearn.data.dataset import ArraySource
from alearn.data.tfds_source import DatasetNotFoundError, resolve_data_dir

DIRNAME = "tiny_imagenet"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy", "wnids.txt")


def prepare_command(root: pathlib.Path) -> str:
    """The command that downloads and converts Tiny ImageNet into ``root``."""
    return (
        f"curl -LO {URL} && python -m alearn.data.prepare_tiny_imagenet "
        f"--source=tiny-imagenet-200.zip --data_dir={shlex.quote(str(root))}"
    )


def open_splits(data_dir: str | os.PathLike | None) -> tuple[dict[str, ArraySource], dict]:
    """Returns ({"train", "test"} sources, metadata {"num_classes", "mean", "std"}).

    Raises:
      DatasetNotFoundError: the prepared files are missing.
    """
    root = resolve_data_dir(data_dir)
    folder = root / DIRNAME
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"dataset 'tiny_imagenet' is not prepared under data_dir {root} (missing in "
            f"{folder}: {', '.join(missing)}). On a machine with internet run:\n  "
            f"{prepare_command(root)}\n(or pass data_dir= / set TFDS_DATA_DIR)"
        )
    sources = {}
    for split in ("train", "test"):
        images = np.load(folder / f"{split}_images.npy", mmap_mode="r")
        labels = np.load(folder / f"{split}_labels.npy")
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"{folder}/{split}_images.npy: want uint8 (N, H, W, C), got "
                             f"{images.dtype} {images.shape}")
        sources[split] = ArraySource(images, labels)
    wnids = (folder / "wnids.txt").read_text().split()
    meta = {"num_classes": len(wnids), "image_shape": tuple(sources["train"].images.shape[1:])}
    stats = folder / "stats.json"
    if stats.is_file():
        meta.update({k: tuple(v) for k, v in json.loads(stats.read_text()).items()
                     if k in ("mean", "std")})
    return sources, meta
