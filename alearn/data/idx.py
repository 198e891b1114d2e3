"""IDX files (the MNIST family's format) and the ``fashion_mnist`` dataset read from them.

IDX (LeCun's MNIST format): a 4-byte magic ``0x00 0x00 <type> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the data in row-major order. Type ``0x08`` is uint8, the
only type image/label files of MNIST, Fashion-MNIST and KMNIST use; the others are read too.
Files may be gzip-compressed (recognised by their first bytes), as the original downloads are.

An IDX *dataset* is a folder with one images file and one labels file per split, named
``<prefix>-images-idx<k>-ubyte[.gz]`` / ``<prefix>-labels-idx1-ubyte[.gz]`` (a ``.`` instead
of the ``-`` before ``idx`` is accepted too); prefix ``t10k`` is the ``test`` split.

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
import re
import zlib

import numpy as np

from alearn.data.dataset import ArraySource

# magic type byte -> big-endian numpy dtype
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
DTYPES = tuple(np.dtype(v).newbyteorder("=") for v in _DTYPES.values())

DEBIAN_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
INSTALL_COMMAND = "apt-get install dataset-fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_SHAPE, FASHION_CLASSES = (28, 28, 1), 10
# <prefix>-{images,labels}[-.]idx<k>-ubyte[.gz]
_FILE_RE = re.compile(r"^(?P<prefix>[A-Za-z0-9_]+)-(?P<kind>images|labels)[-.]idx\d-ubyte(\.gz)?$")
_SPLIT_OF_PREFIX = {"t10k": "test"}


class IdxFormatError(ValueError):
    """A file is not a well-formed IDX file (the message names the file and what is wrong)."""


def _read_bytes(path: pathlib.Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise IdxFormatError(f"{path}: broken gzip data ({type(e).__name__}: {e})") from None


def read(path: str | os.PathLike) -> np.ndarray:
    """The array stored in IDX file ``path`` (plain or gzip), in native byte order.

    Raises:
      IdxFormatError: bad magic, unknown type, truncated header, or a byte count that does
        not match the header's shape (the message names the file).
    """
    path = pathlib.Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{path}: not an IDX file (magic bytes {data[:4].hex() or 'none'}; "
                             f"want 0000<type><ndim>)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise IdxFormatError(f"{path}: unknown IDX data type 0x{code:02x}; valid: "
                             f"{', '.join(f'0x{c:02x}' for c in _DTYPES)}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{path}: truncated header ({len(data)} bytes, {ndim} dimensions "
                             f"need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(_DTYPES[code])
    want = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != want:
        raise IdxFormatError(f"{path}: {len(data)} bytes, but shape {shape} of "
                             f"{dtype.newbyteorder('=').name} needs {want}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Writes ``array`` as an IDX file (gzip when ``path`` ends in .gz, or ``compress``)."""
    path = pathlib.Path(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of "
                         f"{', '.join(str(d) for d in DTYPES)}")
    if array.ndim > 255:
        raise ValueError(f"IDX stores at most 255 dimensions, got {array.ndim}")
    head = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = array.astype(np.dtype(_DTYPES[code])).tobytes()
    gz = path.suffix == ".gz" if compress is None else compress
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(head + body)


def read_split(images_path: str | os.PathLike, labels_path: str | os.PathLike,
               ) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, H, W, C), int32 labels (N,)) from one split's pair of IDX files.

    Images may be stored (N, H, W) (a channel axis is added) or (N, H, W, C).

    Raises:
      IdxFormatError: not uint8 images of 3 or 4 dimensions, labels not a vector of
        non-negative integers, or a different number of labels than images.
    """
    images, labels = read(images_path), read(labels_path)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise IdxFormatError(f"{images_path}: want uint8 images (N, H, W) or (N, H, W, C), got "
                             f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise IdxFormatError(f"{labels_path}: want a vector of integer labels, got "
                             f"{labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise IdxFormatError(f"{labels_path}: {len(labels)} labels for the {len(images)} images "
                             f"of {images_path}")
    if len(labels) and labels.min() < 0:
        raise IdxFormatError(f"{labels_path}: negative label {labels.min()}")
    return (images if images.ndim == 4 else images[..., None]), labels.astype(np.int32)


def find_splits(folder: str | os.PathLike) -> dict[str, tuple[pathlib.Path, pathlib.Path]]:
    """``{split: (images_path, labels_path)}`` of the IDX dataset in ``folder`` (module doc).

    Raises:
      FileNotFoundError: no complete images/labels pair in ``folder``.
      IdxFormatError: two files for one split and kind (e.g. plain and .gz).
    """
    folder = pathlib.Path(folder)
    found: dict[tuple[str, str], pathlib.Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        m = _FILE_RE.match(path.name)
        if m is None or not path.is_file():
            continue
        split = _SPLIT_OF_PREFIX.get(m["prefix"], m["prefix"])
        if (split, m["kind"]) in found:
            raise IdxFormatError(f"{folder}: two {m['kind']} files for split {split!r}: "
                                 f"{found[split, m['kind']].name} and {path.name}")
        found[split, m["kind"]] = path
    splits = sorted({s for s, _ in found if (s, "images") in found and (s, "labels") in found})
    if not splits:
        raise FileNotFoundError(f"no IDX dataset in {folder}: want pairs of files "
                                f"<split>-images-idx3-ubyte[.gz] and <split>-labels-idx1-ubyte[.gz]")
    return {s: (found[s, "images"], found[s, "labels"]) for s in splits}


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


@functools.lru_cache(maxsize=8)
def _load(images_path: pathlib.Path, labels_path: pathlib.Path, _stamp) -> tuple[np.ndarray, ...]:
    """One split, parsed once per process per file version (``_stamp``: sizes and mtimes)."""
    images, labels = read_split(images_path, labels_path)
    if images.shape[1:] != FASHION_SHAPE:
        raise IdxFormatError(f"{images_path}: fashion_mnist images are {FASHION_SHAPE}, got "
                             f"{images.shape[1:]}")
    if len(labels) and labels.max() >= FASHION_CLASSES:
        raise IdxFormatError(f"{labels_path}: label {labels.max()} outside fashion_mnist's "
                             f"{FASHION_CLASSES} classes")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def sources(data_dir: str | os.PathLike | None = None,
            splits: tuple[str, ...] = ("train", "test")) -> dict[str, ArraySource]:
    """Fashion-MNIST's ``splits`` (of train / test), each parsed once per process (~0.6 s).

    Only the files of ``splits`` are read (``validation=`` reads train alone).
    """
    found = locate(data_dir)
    out = {}
    for split in splits:
        paths = found[split]
        stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
        out[split] = ArraySource(*_load(*paths, stamp))
    return out
