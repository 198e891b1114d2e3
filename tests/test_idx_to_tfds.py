"""IDX -> TFDS array_record converter, read back through the real ``tfds.data_source`` path."""

import numpy as np
import pytest

import alearn.data as data
from alearn.data import idx, idx_to_tfds
from alearn.data.tfds_source import TfdsSource


def _write_idx(folder, shape=(28, 28), n=(23, 9), classes=10, seed=0, prefixes=("train", "t10k")):
    """A tiny IDX dataset (random pixels and labels) in MNIST's file names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, count in zip(prefixes, n):
        x = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        y = rng.integers(0, classes, count).astype(np.uint8)
        idx.write(folder / f"{prefix}-images-idx{x.ndim}-ubyte.gz", x)
        idx.write(folder / f"{prefix}-labels-idx1-ubyte", y)
        arrays["test" if prefix == "t10k" else prefix] = (x if x.ndim == 4 else x[..., None], y)
    return arrays


def _read_tfds(name, split, root):
    import tensorflow_datasets as tfds
    source = tfds.data_source(name, split=split, data_dir=str(root), download=False, try_gcs=False)
    return source, TfdsSource(source).load_all()


@pytest.mark.parametrize("in_memory", [True, False])
def test_converted_idx_read_end_to_end_as_mnist(tmp_path, in_memory):
    arrays = _write_idx(tmp_path / "idx")
    out = idx_to_tfds.convert("mnist", tmp_path / "tfds", tmp_path / "idx", examples_per_shard=10)
    # TFDS registers mnist at 3.0.1: the files go where its own builder looks
    assert out == tmp_path / "tfds" / "mnist" / "3.0.1"
    assert sorted(p.name for p in out.glob("mnist-train.*")) == [
        f"mnist-train.array_record-0000{k}-of-00003" for k in range(3)]
    ds = data.create("mnist", data_dir=str(tmp_path / "tfds"), in_memory=in_memory)
    assert ds.info == data.DatasetInfo("mnist", 10, (28, 28, 1), 23, 9)
    for split in ("train", "test"):
        (batch,) = list(ds.batches(split, 23 if split == "train" else 9, shuffle=False,
                                   augment=False))
        np.testing.assert_allclose(batch["image"], arrays[split][0] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(batch["label"], arrays[split][1])
    # the raw TFDS records: uint8 (28, 28, 1) images and int64 labels, in IDX order
    source, loaded = _read_tfds("mnist", "train", tmp_path / "tfds")
    record = source[22]
    assert record["image"].dtype == np.uint8 and record["image"].shape == (28, 28, 1)
    np.testing.assert_array_equal(record["image"], arrays["train"][0][22])
    assert int(record["label"]) == arrays["train"][1][22]
    np.testing.assert_array_equal(loaded.images, arrays["train"][0])
    # validation= opens the train split only: it works with the test file gone (in_memory=True
    # would decode the test split, so that case fails if the test split is opened)
    (out / "mnist-test.array_record-00000-of-00001").unlink()
    held = data.create("mnist", data_dir=str(tmp_path / "tfds"), in_memory=in_memory,
                       validation=0.3)
    x, y = held._source("test").gather(np.arange(held.info.num_test))  # pylint: disable=protected-access
    train_x, train_y = arrays["train"]
    rows = [next(i for i in range(23) if np.array_equal(train_x[i], img)) for img in x]
    np.testing.assert_array_equal(y, train_y[rows])
    assert held.info.num_train + held.info.num_test == 23


def test_unregistered_name_rgb_and_cli(tmp_path):
    arrays = _write_idx(tmp_path / "idx", shape=(5, 6, 3), n=(7, 4, 3), classes=4,
                        prefixes=("train", "valid", "t10k"))
    idx_to_tfds.main(["--name=tiny_rgb", f"--data_dir={tmp_path / 'tfds'}",
                      f"--source={tmp_path / 'idx'}", "--version=2.1.0"])
    out = tmp_path / "tfds" / "tiny_rgb" / "2.1.0"
    assert (out / "dataset_info.json").is_file() and (out / "features.json").is_file()
    for split in ("train", "valid", "test"):
        _, loaded = _read_tfds("tiny_rgb", split, tmp_path / "tfds")
        np.testing.assert_array_equal(loaded.images, arrays[split][0])
        np.testing.assert_array_equal(loaded.labels, arrays[split][1])
    import tensorflow_datasets as tfds
    builder = tfds.builder("tiny_rgb", data_dir=str(tmp_path / "tfds"))
    assert builder.info.features["label"].num_classes == int(max(
        y.max() for _, y in arrays.values())) + 1
    assert builder.info.splits["train"].num_examples == 7


def test_converter_errors(tmp_path):
    _write_idx(tmp_path / "idx")
    idx_to_tfds.convert("mnist", tmp_path / "tfds", tmp_path / "idx")
    with pytest.raises(FileExistsError, match="overwrite"):
        idx_to_tfds.convert("mnist", tmp_path / "tfds", tmp_path / "idx")
    arrays = _write_idx(tmp_path / "idx", seed=1)
    idx_to_tfds.convert("mnist", tmp_path / "tfds", tmp_path / "idx", overwrite=True)
    _, loaded = _read_tfds("mnist", "test", tmp_path / "tfds")
    np.testing.assert_array_equal(loaded.images, arrays["test"][0])
    assert [p.name for p in (tmp_path / "tfds" / "mnist").iterdir()] == ["3.0.1"]  # no leftovers

    _write_idx(tmp_path / "big", shape=(32, 32))
    with pytest.raises(ValueError, match="does not fit TFDS's registered 'mnist'"):
        idx_to_tfds.convert("mnist", tmp_path / "t2", tmp_path / "big")
    with pytest.raises(ValueError, match="registers 'mnist' at version 3.0.1"):
        idx_to_tfds.convert("mnist", tmp_path / "t2", tmp_path / "idx", version="1.0.0")
    with pytest.raises(ValueError, match="'emnist' has builder configs"):
        idx_to_tfds.convert("emnist", tmp_path / "t2", tmp_path / "idx")
    with pytest.raises(ValueError, match="--source .* is needed for --name=kmnist"):
        idx_to_tfds.convert("kmnist", tmp_path / "t2")
    with pytest.raises(ValueError, match="lower-case TFDS name"):
        idx_to_tfds.convert("My-Set", tmp_path / "t2", tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="no IDX dataset in"):
        idx_to_tfds.convert("tiny", tmp_path / "t2", tmp_path / "tfds")
    assert not (tmp_path / "t2").exists() or not any((tmp_path / "t2").rglob("*.array_record*"))


_REAL_TEST = [idx._find(idx.DEBIAN_DIR, f) for f in idx.FILES["test"]]  # pylint: disable=protected-access


@pytest.mark.skipif(not all(_REAL_TEST), reason=f"Fashion-MNIST not installed in {idx.DEBIAN_DIR} "
                                                f"(`{idx.INSTALL_COMMAND}`)")
def test_real_fashion_mnist_test_split_converted_and_read_through_tfds(tmp_path):
    """The 10,000 real test images (the train split would take ~10 s more), via TFDS's own
    registered ``fashion_mnist`` builder."""
    (tmp_path / "src").mkdir()
    for path in _REAL_TEST:
        (tmp_path / "src" / path.name).symlink_to(path)
    idx_to_tfds.convert("fashion_mnist", tmp_path / "tfds", tmp_path / "src")
    source, loaded = _read_tfds("fashion_mnist", "test", tmp_path / "tfds")
    want_x, want_y = idx.read_split(*_REAL_TEST)
    assert len(source) == 10000
    np.testing.assert_array_equal(loaded.images, want_x)
    np.testing.assert_array_equal(loaded.labels, want_y)
    np.testing.assert_array_equal(np.bincount(loaded.labels, minlength=10), [1000] * 10)
