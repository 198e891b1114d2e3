"""TFDS datasets read offline through ``tfds.data_source`` (array_record, no TensorFlow).

``tfds.data_source(name, split=..., data_dir=..., download=False)`` gives random access to
prepared array_record files; batches are gathered by index (``__getitems__``, one call per
batch). Nothing here ever downloads: before TFDS is even imported we check that
``<data_dir>/<name>/<version>/`` exists, and any failure to open the data becomes a
``DatasetNotFoundError`` naming the directory searched and the preparation command.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import time

import numpy as np
from absl import logging

from alearn.data.dataset import ArraySource


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message names the directory and how to prepare it."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
    """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (absolute)."""
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    return pathlib.Path(data_dir).expanduser().absolute()


def prepare_command(tfds_name: str, data_dir: pathlib.Path, extras: tuple[str, ...] = ()) -> str:
    """The shell command that prepares ``tfds_name`` as array_record on a machine with internet.

    ``tfds build`` (tensorflow-datasets 4.9.10 CLI) needs TensorFlow to encode the images;
    reading them back here does not.
    """
    packages = " ".join(("tensorflow", "tensorflow-datasets", *extras))
    return (
        f"pip install {packages} && tfds build {tfds_name} "
        f"--data_dir={shlex.quote(str(data_dir))} --file_format=array_record"
    )


def _not_found(name: str, tfds_name: str, root: pathlib.Path, extras, reason: str):
    return DatasetNotFoundError(
        f"dataset {name!r} (TFDS {tfds_name!r}) is not prepared under data_dir {root} "
        f"({reason}). On a machine with internet run:\n  {prepare_command(tfds_name, root, extras)}\n"
        f"and copy its {tfds_name}/ folder to {root / tfds_name} here (or pass data_dir= / "
        f"set TFDS_DATA_DIR). Data "
        f"already prepared as tfrecord can be converted with: tfds convert_format "
        f"--dataset_dir={shlex.quote(str(root / tfds_name))} --out_file_format=array_record"
    )


def check_prepared(name: str, tfds_name: str, root: pathlib.Path, extras=()) -> None:
    """Cheap on-disk check (no TFDS import): ``<root>/<tfds_name>/<version>/`` must exist."""
    builder_dir = root / tfds_name
    if not builder_dir.is_dir():
        raise _not_found(name, tfds_name, root, extras, f"no directory {builder_dir}")
    if not any(p.is_dir() for p in builder_dir.iterdir()):
        raise _not_found(name, tfds_name, root, extras, f"no version directory in {builder_dir}")


class TfdsSource:
    """One TFDS split; ``gather`` reads a batch with one ``__getitems__`` call.

    ``encode`` (optional) maps the list of records to ``(inputs, labels)`` instead of
    stacking ``record[image_key]`` (text datasets: ``alearn.data.text.RecordTexts``).
    """

    def __init__(self, data_source, image_key: str = "image", label_key: str = "label",
                 encode=None):
        self._ds = data_source
        self._image_key = image_key
        self._label_key = label_key
        self._encode = encode

    def __len__(self) -> int:
        return len(self._ds)

    def _read(self, keys: list[int]) -> list[dict]:
        getitems = getattr(self._ds, "__getitems__", None)
        if getitems is None:
            return [self._ds[k] for k in keys]
        return getitems(keys)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")  # read in file order: sequential I/O
        records = self._read(indices[order].tolist())
        if self._encode is not None:
            images, labels = self._encode(records)
        else:
            images = np.stack([np.asarray(r[self._image_key]) for r in records])
            labels = np.asarray([r[self._label_key] for r in records], dtype=np.int32)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return images[inverse], labels[inverse]

    def load_all(self, chunk: int = 4096) -> ArraySource:
        """The whole split decoded into memory (the ``in_memory=True`` option)."""
        parts = [self.gather(np.arange(s, min(s + chunk, len(self)))) for s in range(0, len(self), chunk)]
        return ArraySource(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def open_splits(
    name: str,
    tfds_name: str,
    data_dir: str | os.PathLike | None,
    splits: dict[str, str],
    *,
    extras: tuple[str, ...] = (),
    in_memory: bool = True,
    encode=None,
) -> dict[str, TfdsSource | ArraySource]:
    """Opens ``{our_split: tfds_split}`` of ``tfds_name`` without ever downloading.

    ``encode``: see :class:`TfdsSource`.

    Raises:
      DatasetNotFoundError: the data is not prepared under the resolved data_dir.
    """
    root = resolve_data_dir(data_dir)
    check_prepared(name, tfds_name, root, extras)
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    out = {}
    for ours, theirs in splits.items():
        try:
            ds = tfds.data_source(tfds_name, split=theirs, download=False,  # never download
                                  data_dir=str(root), try_gcs=False)
        except Exception as e:  # noqa: BLE001 — any failure here means "not usable on disk"
            raise _not_found(name, tfds_name, root, extras, f"tfds: {type(e).__name__}: {e}") from e
        source = TfdsSource(ds, encode=encode)
        if in_memory:
            start = time.perf_counter()
            source = source.load_all()
            logging.info("%s/%s: %d examples decoded into memory in %.1f s", tfds_name, theirs,
                         len(source), time.perf_counter() - start)
        out[ours] = source
    return out
