"""Writes an IDX dataset as a TFDS array_record dataset, without TensorFlow.

Usage (nothing here downloads)::

    python -m alearn.data.idx_to_tfds --name=fashion_mnist --data_dir=DIR   # Debian package
    python -m alearn.data.idx_to_tfds --name=mnist --data_dir=DIR --source=FOLDER_OF_IDX_FILES

``--source`` is a folder of ``<split>-images-idx3-ubyte[.gz]`` / ``<split>-labels-idx1-ubyte[.gz]``
pairs (``t10k`` = ``test``; see ``alearn.data.idx``); without it, ``--name=fashion_mnist``
reads the Debian package's files. The result is ``DIR/<name>/<version>/`` with
``<name>-<split>.array_record-0000k-of-0000n`` files, ``dataset_info.json`` and
``features.json`` in the layout of tensorflow-datasets 4.9.x (written and read back with
4.9.10), which ``tfds.data_source(name, split=..., data_dir=DIR, download=False)`` and
``alearn.data.create(name, data_dir=DIR)`` read.

Features: ``image`` (``tfds.features.Image``, uint8 (H, W, C), PNG-encoded by Pillow) and
``label`` (``tfds.features.ClassLabel``, stored as int64). When ``name`` is a dataset TFDS
registers (e.g. ``mnist``, ``fashion_mnist``, ``kmnist``) the registered builder's features
and version are used, so TFDS reads the files through its own builder; the IDX data must fit
them (same image shape, labels within its classes). Other names get version 1.0.0 (or
``--version``) and ``num_classes = max label + 1``. Examples keep the IDX files' order (TFDS's
own ``tfds build`` shuffles them), so example ``i`` of a split is image ``i`` of its IDX file.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import pathlib
import shutil

import numpy as np
from absl import logging
from PIL import Image

from alearn.data import idx
from alearn.data.tfds_source import resolve_data_dir

DEFAULT_VERSION = "1.0.0"
PNG_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="png")
    return buf.getvalue()


def _features(name: str, image_shape: tuple, num_classes: int, version: str | None,
              root: pathlib.Path):
    """(features, version): the registered builder's, else ``image`` + ``label`` of the data."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    try:
        cls = tfds.builder_cls(name)
    except Exception:  # noqa: BLE001 — not a registered TFDS dataset
        cls = None
    if cls is None:
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=image_shape, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=num_classes),
        })
        return features, version or DEFAULT_VERSION
    if getattr(cls, "BUILDER_CONFIGS", None):
        raise ValueError(f"TFDS dataset {name!r} has builder configs "
                         f"({', '.join(c.name for c in cls.BUILDER_CONFIGS)}); convert under "
                         f"another --name")
    if version is not None and str(version) != str(cls.VERSION):
        raise ValueError(f"TFDS registers {name!r} at version {cls.VERSION}; --version={version} "
                         f"would not be read by its builder (omit --version, or use another --name)")
    features = cls(data_dir=str(root)).info.features  # the code's features; reads nothing
    fits = set(features.keys()) == {"image", "label"}
    if fits:
        image, label = features["image"], features["label"]
        fits = (isinstance(image, tfds.features.Image) and tuple(image.shape) == tuple(image_shape)
                and image.np_dtype == np.uint8 and isinstance(label, tfds.features.ClassLabel)
                and label.num_classes >= num_classes)
    if not fits:
        raise ValueError(f"IDX data (uint8 images {tuple(image_shape)}, {num_classes} classes) does "
                         f"not fit TFDS's registered {name!r} features {features}; convert under "
                         f"another --name")
    return features, str(cls.VERSION)


def _write_split(path_of_shard, features, images, labels, examples_per_shard: int):
    """Writes one split's shards; returns (shard_lengths, num_bytes)."""
    from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
    from tensorflow_datasets.core import example_serializer  # pylint: disable=import-outside-toplevel

    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    n = len(labels)
    num_shards = max(1, math.ceil(n / examples_per_shard))
    bounds = np.linspace(0, n, num_shards + 1).astype(int)
    lengths, num_bytes = [], 0
    for k in range(num_shards):
        writer = array_record_module.ArrayRecordWriter(str(path_of_shard(k, num_shards)),
                                                       "group_size:1")
        for i in range(bounds[k], bounds[k + 1]):
            record = serializer.serialize_example(features.encode_example(
                {"image": _png(images[i]), "label": int(labels[i])}))
            writer.write(record)
            num_bytes += len(record)
        writer.close()
        lengths.append(int(bounds[k + 1] - bounds[k]))
    return lengths, num_bytes


def convert(name: str, data_dir: str | os.PathLike | None, source: str | os.PathLike | None = None,
            *, version: str | None = None, examples_per_shard: int = 100_000,
            overwrite: bool = False) -> pathlib.Path:
    """Writes the IDX dataset in ``source`` as TFDS ``name`` under ``data_dir``; see module doc.

    Returns:
      The version directory written, ``<data_dir>/<name>/<version>``.

    Raises:
      ValueError: bad name, version, shard size or data that do not fit a registered builder.
      FileExistsError: the version directory exists and ``overwrite`` is False.
      FileNotFoundError / IdxFormatError: no or malformed IDX files.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    if not name or not name.replace("_", "a").isalnum() or not name[0].isalpha() or name != name.lower():
        raise ValueError(f"--name must be a lower-case TFDS name such as 'mnist', got {name!r}")
    if isinstance(examples_per_shard, bool) or not isinstance(examples_per_shard, int) or examples_per_shard < 1:
        raise ValueError(f"examples_per_shard must be a positive integer, got {examples_per_shard!r}")
    if source is None:
        if name != "fashion_mnist":
            raise ValueError(f"--source (a folder of IDX files) is needed for --name={name}; "
                             f"only fashion_mnist has a default (the Debian package's files)")
        paths = idx.locate(None)
    else:
        paths = idx.find_splits(source)
    data = {split: idx.read_split(*p) for split, p in paths.items()}
    shapes = {tuple(x.shape[1:]) for x, _ in data.values()}
    if len(shapes) != 1:
        raise idx.IdxFormatError(f"splits of {source} have different image shapes {sorted(shapes)}")
    (image_shape,) = shapes
    if image_shape[-1] not in PNG_CHANNELS:
        raise ValueError(f"images with {image_shape[-1]} channels cannot be PNG-encoded; "
                         f"valid channel counts: {PNG_CHANNELS}")
    num_classes = max((int(y.max()) + 1 for _, y in data.values() if len(y)), default=1)
    root = resolve_data_dir(data_dir)
    features, version = _features(name, image_shape, num_classes, version, root)

    builder_dir = root / name
    out = builder_dir / version
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    tmp = builder_dir / f".{version}.incomplete-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    template = f"{name}-{{split}}.array_record-{{k:05d}}-of-{{n:05d}}"
    split_infos = []
    for split, (images, labels) in data.items():
        lengths, num_bytes = _write_split(
            lambda k, n, s=split: tmp / template.format(split=s, k=k, n=n),
            features, images, labels, examples_per_shard)
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=num_bytes))
        logging.info("%s/%s: %d examples in %d shard(s), %d bytes", name, split, sum(lengths),
                     len(lengths), num_bytes)
    tfds.folder_dataset.write_metadata(data_dir=tmp, features=features, split_infos=split_infos,
                                       version=version, check_data=False,  # check_data needs TF
                                       description=f"Converted by alearn.data.idx_to_tfds from the "
                                       f"IDX files {sorted(str(q) for p in paths.values() for q in p)}; "
                                       f"examples in IDX order.")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="TFDS dataset name, e.g. fashion_mnist, mnist")
    parser.add_argument("--data_dir", default=None,
                        help="root data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--source", default=None,
                        help="folder of IDX files (default for fashion_mnist: the Debian package)")
    parser.add_argument("--version", default=None, help=f"unregistered names only (default {DEFAULT_VERSION})")
    parser.add_argument("--examples_per_shard", type=int, default=100_000)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    out = convert(args.name, args.data_dir, args.source, version=args.version,
                  examples_per_shard=args.examples_per_shard, overwrite=args.overwrite)
    logging.info("wrote %s", out)


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    main()
