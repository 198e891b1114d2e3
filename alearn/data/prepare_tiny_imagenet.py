"""Converts the official Tiny ImageNet archive into the arrays ``alearn.data`` reads.

Usage (on a machine that has the archive; nothing here downloads)::

    curl -LO http://cs231n.stanford.edu/tiny-imagenet-200.zip
    python -m alearn.data.prepare_tiny_imagenet --source=tiny-imagenet-200.zip \
        --data_dir=~/tensorflow_datasets

``--source`` is the zip or its extracted ``tiny-imagenet-200/`` folder. Official layout:
``wnids.txt``; ``train/<wnid>/images/*.JPEG`` (500 per class);
``val/images/*.JPEG`` with labels in ``val/val_annotations.txt`` (file, wnid, box).
Labels are the index of the wnid in sorted order; train rows are sorted by (wnid, file
name), test rows by file name. Greyscale JPEGs are converted to RGB. The per-channel
mean / std of the training pixels go to ``stats.json``. See ``alearn/data/tiny_imagenet.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import zipfile

import numpy as np
from absl import logging
from PIL import Image

from alearn.data.tiny_imagenet import DIRNAME
from alearn.data.tfds_source import resolve_data_dir


class _Archive:
    """Read access to the zip or the extracted folder, by path relative to its root."""

    def __init__(self, source: pathlib.Path):
        self._zip = zipfile.ZipFile(source) if source.is_file() else None
        if self._zip is not None:
            names = self._zip.namelist()
        else:
            names = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
        wnids = [n for n in names if n == "wnids.txt" or n.endswith("/wnids.txt")]
        if not wnids:
            raise FileNotFoundError(f"{source} has no wnids.txt: not a Tiny ImageNet archive")
        self._prefix = min(wnids, key=len)[: -len("wnids.txt")]
        self._source = source
        self.names = [n[len(self._prefix):] for n in names if n.startswith(self._prefix)]

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._prefix + name)
        return (self._source / self._prefix / name).read_bytes()


def _decode(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if arr.shape[:2] != shape:
        raise ValueError(f"image of shape {arr.shape}, want {shape}")
    return arr


def _write(archive: _Archive, files: list[str], labels: list[int], out: pathlib.Path, split: str,
           size: int) -> np.ndarray:
    images = np.lib.format.open_memmap(
        out / f"{split}_images.npy", mode="w+", dtype=np.uint8, shape=(len(files), size, size, 3)
    )
    for i, name in enumerate(files):
        images[i] = _decode(archive.read(name), (size, size))
        if (i + 1) % 10000 == 0:
            logging.info("%s: %d / %d images", split, i + 1, len(files))
    images.flush()
    np.save(out / f"{split}_labels.npy", np.asarray(labels, dtype=np.int32))
    return images


def prepare(source: str | pathlib.Path, data_dir: str | None = None, size: int = 64) -> pathlib.Path:
    """Writes ``<data_dir>/tiny_imagenet/`` from the archive ``source``; returns that folder."""
    archive = _Archive(pathlib.Path(source).expanduser())
    wnids = sorted(archive.read("wnids.txt").decode().split())
    label_of = {w: i for i, w in enumerate(wnids)}
    train = sorted(
        (n.split("/")[1], n) for n in archive.names
        if n.startswith("train/") and n.split("/")[-2:-1] == ["images"] and n.upper().endswith(".JPEG")
    )
    train_files, train_labels = [n for _, n in train], [label_of[w] for w, _ in train]
    annotations = archive.read("val/val_annotations.txt").decode().splitlines()
    val = sorted(tuple(line.split("\t")[:2]) for line in annotations if line.strip())
    test_files = [f"val/images/{f}" for f, _ in val]
    test_labels = [label_of[w] for _, w in val]

    out = resolve_data_dir(data_dir) / DIRNAME
    out.mkdir(parents=True, exist_ok=True)
    (out / "wnids.txt").write_text("\n".join(wnids) + "\n")
    images = _write(archive, train_files, train_labels, out, "train", size)
    _write(archive, test_files, test_labels, out, "test", size)
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for s in range(0, len(images), 4096):
        chunk = images[s:s + 4096].reshape(-1, 3).astype(np.float64) / 255.0
        total += chunk.sum(0)
        total_sq += (chunk * chunk).sum(0)
    count = images.shape[0] * size * size
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    (out / "stats.json").write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist()}))
    logging.info("wrote %d train / %d test images to %s", len(train_files), len(test_files), out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="tiny-imagenet-200.zip or its extracted folder")
    parser.add_argument("--data_dir", default=None,
                        help="root data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    args = parser.parse_args(argv)
    prepare(args.source, args.data_dir)


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    main()
