"""IDX files, the ``fashion_mnist`` dataset read from them, and the ``validation`` option."""

import gzip
import struct

import numpy as np
import pytest

import alearn.data as data
from alearn.data import holdout, idx

# ---------------------------------------------------------------- IDX reader / writer

_ALL_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", _ALL_DTYPES)
def test_idx_round_trip_every_dtype(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    a = (rng.integers(info.min, info.max, (3, 4, 5), endpoint=True).astype(dtype) if info
         else rng.normal(size=(3, 4, 5)).astype(dtype))
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    idx.write(path, a)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == gz
    b = idx.read(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(b, a)


def test_idx_bytes_match_the_format_written_by_hand(tmp_path):
    """Oracle: the header and big-endian body laid out with struct, as LeCun's page says."""
    a = np.array([[1, -2, 300], [4, 5, -70000]], np.int32)
    idx.write(tmp_path / "a", a)
    want = bytes([0, 0, 0x0C, 2]) + struct.pack(">II", 2, 3) + struct.pack(">6i", *a.ravel())
    assert (tmp_path / "a").read_bytes() == want
    # and a hand-written uint8 file (the MNIST type) reads back
    (tmp_path / "b").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + bytes([9, 0, 255, 7]))
    np.testing.assert_array_equal(idx.read(tmp_path / "b"), [9, 0, 255, 7])
    # a big-endian input array is stored the same as a native one
    idx.write(tmp_path / "c", a.astype(">i4"))
    assert (tmp_path / "c").read_bytes() == want


def test_idx_write_rejects_unstorable_dtype(tmp_path):
    with pytest.raises(ValueError, match="uint16.*uint8"):
        idx.write(tmp_path / "a", np.zeros(3, np.uint16))


_GOOD = bytes([0, 0, 8, 2]) + struct.pack(">II", 2, 3) + bytes(range(6))


@pytest.mark.parametrize("content,needle", [
    (b"", "not an IDX file"),
    (b"\x01\x02\x08\x01" + _GOOD[4:], "not an IDX file"),
    (bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"\x00", "unknown IDX data type 0x07"),
    (bytes([0, 0, 8, 3]) + struct.pack(">I", 2), "truncated header"),
    (_GOOD[:-1], "17 bytes, but shape \\(2, 3\\) of uint8 needs 18"),
    (_GOOD + b"\x00", "19 bytes, but shape \\(2, 3\\)"),
    (gzip.compress(_GOOD, mtime=0)[:-6], "broken gzip"),  # mtime=0: same ids on every worker
])
def test_malformed_idx_files_name_the_file(tmp_path, content, needle):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(idx.IdxFormatError, match=needle) as e:
        idx.read(path)
    assert str(path) in str(e.value)


def test_read_split_checks_label_count_and_types(tmp_path):
    idx.write(tmp_path / "x", np.zeros((3, 2, 2), np.uint8))
    idx.write(tmp_path / "y", np.zeros(2, np.uint8))
    with pytest.raises(idx.IdxFormatError, match="2 labels for the 3 images") as e:
        idx.read_split(tmp_path / "x", tmp_path / "y")
    assert str(tmp_path / "y") in str(e.value)
    idx.write(tmp_path / "f", np.zeros((3, 2, 2), np.float32))
    with pytest.raises(idx.IdxFormatError, match="want uint8 images"):
        idx.read_split(tmp_path / "f", tmp_path / "y")
    idx.write(tmp_path / "y2", np.zeros((3, 1), np.uint8))
    with pytest.raises(idx.IdxFormatError, match="vector of integer labels"):
        idx.read_split(tmp_path / "x", tmp_path / "y2")


# ---------------------------------------------------------------- fashion_mnist from IDX


def _write_fixture(folder, n_train=40, n_test=12, seed=0, gz=True):
    """A tiny Fashion-MNIST: random 28x28 pixels, labels cycling over 10 classes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images, labels = idx.FILES[split]
        suffix = ".gz" if gz else ""
        idx.write(folder / (images + suffix), x)
        idx.write(folder / (labels + suffix), y)
        arrays[split] = (x, y)
    return arrays


def _raw(ds, split):
    """All raw examples of a split in order (the dataset's source, before normalisation)."""
    src = ds._source(split)  # pylint: disable=protected-access
    return src.gather(np.arange(len(src)))


@pytest.mark.parametrize("sub,gz", [("", True), ("", False), ("fashion-mnist", True),
                                    ("fashion_mnist", False)])
def test_fashion_mnist_from_idx_fixture_exactly(tmp_path, sub, gz):
    arrays = _write_fixture(tmp_path / sub if sub else tmp_path, gz=gz, seed=len(sub))
    ds = data.create("fashion_mnist", data_dir=str(tmp_path))
    assert ds.info == data.DatasetInfo("fashion_mnist", 10, (28, 28, 1), 40, 12)
    for split in ("train", "test"):
        x, y = _raw(ds, split)
        np.testing.assert_array_equal(x[..., 0], arrays[split][0])
        np.testing.assert_array_equal(y, arrays[split][1])
    # default normalisation "unit": batches are pixels / 255, labels unchanged, test in order
    (batch,) = list(ds.batches("test", 12))
    np.testing.assert_allclose(batch["image"][..., 0], arrays["test"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(batch["label"], arrays["test"][1])


def test_fashion_mnist_fixture_standardize_uses_measured_constants(tmp_path):
    arrays = _write_fixture(tmp_path)
    ds = data.create("fashion_mnist", data_dir=str(tmp_path), normalize="standardize")
    (batch,) = list(ds.batches("test", 12))
    want = (arrays["test"][0] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(batch["image"][..., 0], want, rtol=1e-5, atol=1e-5)


def test_fashion_mnist_missing_names_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "DEBIAN_DIR", tmp_path / "no-such-dir")
    (tmp_path / "partial").mkdir()
    idx.write(tmp_path / "partial" / "train-images-idx3-ubyte", np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.create("fashion_mnist", data_dir=str(tmp_path / "partial"))
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "partial") in msg and str(tmp_path / "no-such-dir") in msg
    assert "t10k-labels-idx1-ubyte" in msg
    with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.create("fashion_mnist")


def test_fashion_mnist_rejects_wrong_shape_and_out_of_range_labels(tmp_path):
    _write_fixture(tmp_path / "a")
    idx.write(tmp_path / "a" / "train-images-idx3-ubyte.gz", np.zeros((40, 32, 32), np.uint8))
    with pytest.raises(idx.IdxFormatError, match=r"\(28, 28, 1\), got \(32, 32, 1\)"):
        data.create("fashion_mnist", data_dir=str(tmp_path / "a"))
    _write_fixture(tmp_path / "b")
    idx.write(tmp_path / "b" / "t10k-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8))
    with pytest.raises(idx.IdxFormatError, match="label 10 outside"):
        data.create("fashion_mnist", data_dir=str(tmp_path / "b"))


@pytest.mark.skipif(not all(idx._find(idx.DEBIAN_DIR, f)  # pylint: disable=protected-access
                            for files in idx.FILES.values() for f in files),
                    reason=f"Fashion-MNIST not installed in {idx.DEBIAN_DIR} "
                           f"(`{idx.INSTALL_COMMAND}`)")
def test_fashion_mnist_real_70000_images():
    ds = data.create("fashion_mnist")
    assert ds.info == data.DatasetInfo("fashion_mnist", 10, (28, 28, 1), 60000, 10000)
    for split, per_class in (("train", 6000), ("test", 1000)):
        x, y = _raw(ds, split)
        assert x.dtype == np.uint8 and x.shape[1:] == (28, 28, 1)
        np.testing.assert_array_equal(np.bincount(y, minlength=10), [per_class] * 10)
    x, _ = _raw(ds, "train")
    pixels = x.astype(np.float64) / 255.0
    # the constants of alearn/data/specs.py, measured on these images (docs/notes/data.md)
    assert abs(pixels.mean() - 0.2860) < 5e-5 and abs(pixels.std() - 0.3530) < 5e-5
    assert data.SPECS["fashion_mnist"].mean == (0.2860,)
    assert data.SPECS["fashion_mnist"].std == (0.3530,)


# ---------------------------------------------------------------- validation option


def test_validation_split_is_disjoint_stratified_deterministic_and_covers_train(tmp_path):
    arrays = _write_fixture(tmp_path, n_train=200, n_test=12)
    # the real test files are broken: the validation option must not read them
    for name in idx.FILES["test"]:
        (tmp_path / (name + ".gz")).write_bytes(b"not an idx file")
    with pytest.raises(idx.IdxFormatError):
        data.create("fashion_mnist", data_dir=str(tmp_path))
    ds = data.create("fashion_mnist", data_dir=str(tmp_path), validation=0.2, seed=3)
    again = data.create("fashion_mnist", data_dir=str(tmp_path), validation=0.2, seed=99)
    assert ds.info == data.DatasetInfo("fashion_mnist[validation=0.2]", 10, (28, 28, 1), 160, 40)
    x, y = arrays["train"]
    train_idx = ds._source("train").indices  # pylint: disable=protected-access
    held_idx = ds._source("test").indices  # pylint: disable=protected-access
    assert not set(train_idx) & set(held_idx)
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, held_idx])), np.arange(200))
    np.testing.assert_array_equal(np.bincount(y[held_idx], minlength=10), [4] * 10)  # 20 % of 20
    # independent of the run's seed, and the examples are the training files' own
    np.testing.assert_array_equal(again._source("test").indices, held_idx)  # pylint: disable=protected-access
    hx, hy = _raw(ds, "test")
    np.testing.assert_array_equal(hx[..., 0], x[held_idx])
    np.testing.assert_array_equal(hy, y[held_idx])
    # batches: every training batch image is one of the non-held-out images
    train_set = {x[i].tobytes() for i in train_idx}
    for b in ds.batches("train", 32, augment=False):
        for img in b["image"][..., 0]:
            assert np.rint(img * 255).astype(np.uint8).tobytes() in train_set


def test_validation_keeps_every_class_on_both_sides():
    src = data.ArraySource(np.zeros((7, 1, 1, 1), np.uint8), np.array([0, 0, 1, 2, 2, 2, 2]))
    parts = holdout.split(src, 0.9)
    held = src.labels[parts["test"].indices]
    rest = src.labels[parts["train"].indices]
    # class 1 has one example: it is held out (at least 1); classes 0 and 2 keep >= 1 in train
    assert sorted(held.tolist()) == [0, 1, 2, 2, 2] and sorted(rest.tolist()) == [0, 2]


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.1", True, float("nan")])
def test_bad_validation_values_rejected(bad):
    with pytest.raises(ValueError, match=r"validation must be a fraction in \(0, 1\)") as e:
        data.create("synthetic", validation=bad)
    assert repr(bad) in str(e.value)

