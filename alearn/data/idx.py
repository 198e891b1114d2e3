"""IDX files (the MNIST family's format) and the ``fashion_mnist`` dataset read from them.

IDX (LeCun's MNIST format): a 4-byte magic ``0x00 0x00 <type> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the data in row-major order. Type ``0x08`` is uint8, the
only type image/label files of MNIST, Fashion-MNIST and KMNIST use; the others are read too.
Files may be gzip-compressed (``.gz``), as the original downloads are.

Fashion-MNIST (Xiao et al. 2017; 60,000 train / 10,000 test 28x28 grey images, 10 classes)
is found, in order, in ``data_dir`` (the four original files, directly or in a
``fashion-mnist/`` or ``fashion_mnist/`` subfolder) and in the Debian package's folder
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``). A missing
dataset fails at once with that command; nothing is downloaded.
"""

from __future__ import annotations

import functools
import gzip
import os
import pathlib

import numpy as np

from alearn.data.dataset import ArraySource

# magic type byte -> big-endian numpy dtype
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}

DEBIAN_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
INSTALL_COMMAND = "apt-get install dataset-fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SIZES = {"train": 60000, "test": 10000}


class IdxFormatError(ValueError):
    """A file is not a well-formed IDX file (the message names the file and what is wrong)."""


def _open(path: pathlib.Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read(path: str | os.PathLike) -> np.ndarray:
    """The array stored in IDX file ``path`` (plain or gzip), in native byte order."""
    path = pathlib.Path(path)
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{path}: not an IDX file (magic bytes {data[:4].hex() or 'none'})")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise IdxFormatError(f"{path}: unknown IDX data type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{path}: truncated header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(_DTYPES[code])
    want = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != want:
        raise IdxFormatError(f"{path}: {len(data)} bytes, but shape {shape} of {dtype.str} "
                             f"needs {want}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Writes ``array`` as an IDX file (gzip when ``path`` ends in .gz, or ``compress``)."""
    path = pathlib.Path(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of "
                         f"{sorted(str(np.dtype(v)) for v in _DTYPES.values())}")
    head = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = array.astype(np.dtype(_DTYPES[code])).tobytes()
    gz = path.suffix == ".gz" if compress is None else compress
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(head + body)


def _find(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(data_dir: str | os.PathLike | None) -> list[pathlib.Path]:
    """Where ``fashion_mnist`` is looked for, in order."""
    dirs = []
    if data_dir:
        root = pathlib.Path(data_dir).expanduser().absolute()
        dirs += [root, root / "fashion-mnist", root / "fashion_mnist"]
    return dirs + [DEBIAN_DIR]


def locate(data_dir: str | os.PathLike | None = None) -> dict[str, tuple[pathlib.Path, ...]]:
    """The four Fashion-MNIST files, from the first folder that has all of them.

    Raises:
      FileNotFoundError (``alearn.data.DatasetNotFoundError``): no folder has them; the
        message lists the folders searched and the install command.
    """
    from alearn.data.tfds_source import DatasetNotFoundError  # pylint: disable=import-outside-toplevel

    for folder in candidate_dirs(data_dir):
        found = {s: tuple(_find(folder, f) for f in files) for s, files in FILES.items()}
        if all(p is not None for paths in found.values() for p in paths):
            return found
    searched = ", ".join(str(d) for d in candidate_dirs(data_dir))
    stems = ", ".join(f for files in FILES.values() for f in files)
    raise DatasetNotFoundError(
        f"dataset 'fashion_mnist' is not on disk (searched {searched} for {stems}[.gz]). "
        f"Install it with:\n  {INSTALL_COMMAND}\nor put the four original IDX files in a "
        f"folder and pass it as data_dir (--config.data_dir=...)")


@functools.lru_cache(maxsize=4)
def _load(paths: tuple) -> tuple[np.ndarray, ...]:
    out = []
    for split, (images_path, labels_path) in paths:
        images, labels = read(images_path), read(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise IdxFormatError(f"{images_path}: want uint8 images (N, H, W), got "
                                 f"{images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise IdxFormatError(f"{labels_path}: {labels.shape[0] if labels.ndim else 0} "
                                 f"labels for the {len(images)} images of split {split!r}")
        images = images[..., None]
        labels = labels.astype(np.int32)
        images.setflags(write=False)
        labels.setflags(write=False)
        out += [images, labels]
    return tuple(out)


def sources(data_dir: str | os.PathLike | None = None) -> dict[str, ArraySource]:
    """Fashion-MNIST's train / test splits, parsed once per process (about 0.5 s)."""
    found = locate(data_dir)
    train_x, train_y, test_x, test_y = _load(tuple(sorted(found.items(), reverse=True)))
    return {"train": ArraySource(train_x, train_y), "test": ArraySource(test_x, test_y)}
