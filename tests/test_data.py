"""Oracles for alearn.data: splits, determinism, coverage, augmentations, TFDS, errors."""

import io
import json
import time
import zipfile

import numpy as np
import pytest

import alearn.data as data
from alearn.data import augment, mnist5k, prepare_tiny_imagenet


# ---------------------------------------------------------------- names and options


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        data.create("cifar11")
    for name in data.names():
        assert name in str(e.value)
    assert set(data.names()) >= {"mnist5k", "mnist", "svhn_cropped", "cifar10", "cifar100",
                                 "tiny_imagenet", "synthetic"}


@pytest.mark.parametrize("kwargs,needle", [
    ({"augment": "rotate"}, "crop_flip"),
    ({"normalize": "zscore"}, "standardize"),
    ({"colour": True}, "crop_padding"),
])
def test_bad_options_list_valid_choices(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        data.create("synthetic", **kwargs)


def test_bad_split_and_batch_size():
    ds = data.create("synthetic", num_train=10, num_test=10)
    with pytest.raises(ValueError, match="train, test"):
        ds.batches("validation", 4)
    with pytest.raises(ValueError, match="exceeds"):
        ds.batches("train", 11)  # drop_remainder default for train: empty epoch refused
    assert ds.num_batches("test", 11) == 1


# ---------------------------------------------------------------- mnist5k


def test_mnist5k_split_is_fixed_stratified_and_partitions_the_file():
    ds = data.create("mnist5k", seed=0)
    assert ds.info == data.DatasetInfo("mnist5k", 10, (28, 28, 1), 4000, 1000)
    train_x, train_y, test_x, test_y = mnist5k.load_arrays()
    assert np.array_equal(np.bincount(train_y), np.full(10, 400))
    assert np.array_equal(np.bincount(test_y), np.full(10, 100))
    table = np.loadtxt(mnist5k.csv_path(), delimiter=",", dtype=np.uint8)
    def rows(x, y):
        return sorted(r.tobytes() for r in np.concatenate([x.reshape(len(x), -1), y[:, None]], 1))
    combined = rows(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y]).astype(np.uint8))
    assert combined == sorted(r.tobytes() for r in table)
    # Independent of the seed; test batches are the test digits in order, scaled to [0, 1].
    other = data.create("mnist5k", seed=123)
    a = np.concatenate([b["image"] for b in ds.batches("test", 300)])
    b = np.concatenate([b["image"] for b in other.batches("test", 300)])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, test_x / np.float32(255), rtol=1e-6)
    assert a.min() == 0.0 and a.max() == 1.0


def test_mnist_normalisation_constants_match_mnist5k_statistics():
    """The standard MNIST constants (0.1307, 0.3081) standardise the real digits here."""
    ds = data.create("mnist5k", normalize="standardize")
    x = np.concatenate([b["image"] for b in ds.batches("train", 1000, shuffle=False)])
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1.0) < 0.01
    # Exact formula: (raw / 255 - mean) / std with explicit constants.
    ds = data.create("mnist5k", normalize="standardize", mean=0.5, std=0.25)
    raw = mnist5k.load_arrays()[2][:7].astype(np.float64)
    np.testing.assert_allclose(next(ds.batches("test", 7))["image"], (raw / 255 - 0.5) / 0.25,
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- determinism and coverage


def _epoch(ds, split="train", bs=32, **kw):
    return [(b["image"], b["label"]) for b in ds.batches(split, bs, **kw)]


def test_batches_are_a_function_of_seed_and_epoch():
    mk = lambda seed: data.create("synthetic", seed=seed, image_shape=(8, 8, 3),  # noqa: E731
                                  augment="crop_flip", crop_padding=2)
    e3 = _epoch(mk(0), epoch=3)
    again = _epoch(mk(0), epoch=3)  # a fresh object: no hidden iterator state
    for (x1, y1), (x2, y2) in zip(e3, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    e4 = _epoch(mk(0), epoch=4)
    assert not np.array_equal(e3[0][1], e4[0][1])  # another permutation
    other_seed = _epoch(mk(1), epoch=3)
    assert not np.array_equal(e3[0][1], other_seed[0][1])
    # Same order without augmentation, different pixels with it: augmentation is random too.
    plain = _epoch(mk(0), epoch=3, augment=False)
    np.testing.assert_array_equal(plain[0][1], e3[0][1])
    assert not np.array_equal(plain[0][0], e3[0][0])
    # The augmentation of the same examples changes from epoch to epoch.
    a3, a4 = _epoch(mk(0), epoch=3, shuffle=False), _epoch(mk(0), epoch=4, shuffle=False)
    np.testing.assert_array_equal(a3[0][1], a4[0][1])
    assert not np.array_equal(a3[0][0], a4[0][0])


@pytest.mark.parametrize("split,shuffle", [("train", True), ("test", False), ("test", True)])
def test_every_example_once_per_epoch_without_drop_remainder(split, shuffle):
    ds = data.create("synthetic", num_train=103, num_test=57)
    n = ds.num_examples(split)
    got = _epoch(ds, split, bs=10, shuffle=shuffle, drop_remainder=False, augment=False)
    assert len(got) == ds.num_batches(split, 10, drop_remainder=False) == -(-n // 10)
    images = np.concatenate([x for x, _ in got]).reshape(n, -1)
    src = ds._source(split)  # pylint: disable=protected-access
    want = src.images.reshape(n, -1)
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731  rows sorted lexicographically
    np.testing.assert_array_equal(key(images), key(want))
    labels = np.concatenate([y for _, y in got])
    assert np.array_equal(np.bincount(labels), np.bincount(src.labels))
    assert (images.tolist() == want.tolist()) == (not shuffle)


def test_drop_remainder_drops_only_the_tail():
    ds = data.create("synthetic", num_train=103)
    got = _epoch(ds, "train", bs=10, augment=False)
    assert len(got) == 10 == ds.num_batches("train", 10)
    assert all(len(y) == 10 for _, y in got)
    seen = np.concatenate([x for x, _ in got]).reshape(100, -1)
    assert len(np.unique(seen, axis=0)) == 100


# ---------------------------------------------------------------- augmentations


def _reference_translate(img, dy, dx):
    h, w, _ = img.shape
    out = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[i, j] = img[i - dy, j - dx]
    return out


def test_translate_is_a_zero_filled_shift():
    img = np.arange(1, 17, dtype=np.uint8).reshape(4, 4, 1)
    got = augment.translate(img[None], [1], [-2])[0, :, :, 0]
    np.testing.assert_array_equal(got, [[0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0], [11, 12, 0, 0]])
    batch = np.random.default_rng(0).integers(1, 255, (6, 5, 7, 2)).astype(np.uint8)
    dy, dx = np.array([0, 2, -2, 4, -1, 3]), np.array([1, -2, 0, -4, 5, 3])
    got = augment.translate(batch, dy, dx)
    for k in range(6):
        np.testing.assert_array_equal(got[k], _reference_translate(batch[k], dy[k], dx[k]))


def test_flip_reverses_columns_for_about_half():
    batch = np.random.default_rng(0).random((400, 3, 5, 2)).astype(np.float32)
    out = augment.random_hflip(batch, np.random.default_rng(1))
    flipped = np.array([np.array_equal(o, b[:, ::-1]) for o, b in zip(out, batch)])
    same = np.array([np.array_equal(o, b) for o, b in zip(out, batch)])
    assert np.all(flipped ^ same)
    assert 150 < flipped.sum() < 250


@pytest.mark.parametrize("policy,max_shift,flips", [("jitter2", 2, False), ("crop", 4, False),
                                                    ("crop_flip", 4, True)])
def test_policies_are_bounded_shifts_with_zero_fill(policy, max_shift, flips):
    # One 9x9x3 image with distinct non-zero pixels: its centre survives any shift <= 4 (and a
    # flip), so the centre's position in an output reveals (dy, dx).
    img = np.arange(1, 244, dtype=np.uint8).reshape(9, 9, 3)
    out = augment.apply_policy(policy, np.repeat(img[None], 2000, 0), np.random.default_rng(2),
                               crop_padding=4)
    counts, flipped = {}, 0
    for o in out:
        (i,), (j,) = np.nonzero(o[..., 0] == img[4, 4, 0])
        dy, dx = i - 4, j - 4
        plain = np.array_equal(o, _reference_translate(img, dy, dx))
        mirrored = np.array_equal(o, _reference_translate(img[:, ::-1], dy, dx))
        assert plain or (flips and mirrored), "output is not a zero-filled shift (+ flip)"
        assert max(abs(dy), abs(dx)) <= max_shift
        counts[dy, dx] = counts.get((dy, dx), 0) + 1
        flipped += mirrored
    assert len(counts) == (2 * max_shift + 1) ** 2  # every offset in range occurs
    assert (700 < flipped < 1300) if flips else flipped == 0


def test_augmentation_happens_before_normalisation():
    """Zero fill is a black raw pixel: after standardisation it is -mean/std, not 0."""
    ds = data.create("synthetic", image_shape=(6, 6, 1), num_train=64, augment="jitter2",
                     normalize="standardize", mean=0.5, std=0.25)
    x = np.concatenate([b["image"] for b in ds.batches("train", 32)])
    border = np.concatenate([x[:, 0], x[:, -1]]).ravel()
    assert np.any(np.isclose(border, -2.0))


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_learnable_and_deterministic():
    ds = data.create("synthetic", num_classes=4, image_shape=(4, 4, 2), num_train=400,
                     num_test=200, noise=1.0, data_seed=3)
    assert ds.info == data.DatasetInfo("synthetic", 4, (4, 4, 2), 400, 200)
    tr, te = ds._source("train"), ds._source("test")  # pylint: disable=protected-access
    centroids = np.stack([tr.images[tr.labels == c].mean(0).ravel() for c in range(4)])
    dist = ((te.images.reshape(200, 1, -1) - centroids[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == te.labels).mean() > 0.9
    same = data.create("synthetic", seed=9, num_classes=4, image_shape=(4, 4, 2), num_train=400,
                       num_test=200, noise=1.0, data_seed=3)
    np.testing.assert_array_equal(same._source("test").images, te.images)  # pylint: disable=protected-access


# ---------------------------------------------------------------- TFDS


def _fix_tfds_mock_getitems(monkeypatch):
    """tfds 4.9.10's mock data source binds ``__getitems__`` without ``self``; fix it."""
    from tensorflow_datasets.testing import mocking
    monkeypatch.setattr(mocking, "_getitems",
                        lambda keys, generator, serialized=False: [generator[k] for k in keys])


@pytest.mark.parametrize("in_memory", [False, True])
def test_tfds_reading_through_mock_data_source(tmp_path, monkeypatch, in_memory):
    import tensorflow_datasets as tfds
    _fix_tfds_mock_getitems(monkeypatch)
    (tmp_path / "cifar10" / "3.0.2").mkdir(parents=True)
    with tfds.testing.mock_data(num_examples=21):
        ds = data.create("cifar10", data_dir=str(tmp_path), seed=5, in_memory=in_memory)
        raw = tfds.data_source("cifar10", split="test", data_dir=str(tmp_path), download=False)
        raw = [raw[i] for i in range(21)]
        assert ds.info == data.DatasetInfo("cifar10", 10, (32, 32, 3), 21, 21)
        test = list(ds.batches("test", 8))
        train = list(ds.batches("train", 8, augment=False, drop_remainder=False))
    want = np.stack([r["image"] for r in raw]).astype(np.float32) / 255
    mean, std = np.array(data.SPECS["cifar10"].mean), np.array(data.SPECS["cifar10"].std)
    got = np.concatenate([b["image"] for b in test])
    np.testing.assert_allclose(got, (want - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in test]), [r["label"] for r in raw])
    # Shuffled train batches are gathered by index: each image keeps its own label.
    by_pixels = {r["image"].tobytes(): int(r["label"]) for r in raw}
    for b in train:
        for x, y in zip(b["image"], b["label"]):
            pixels = np.rint((x * std + mean) * 255).astype(np.uint8)
            assert by_pixels[pixels.tobytes()] == y


def test_missing_tfds_dataset_fails_fast_with_dir_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_home"))
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.create("svhn_cropped")
    assert time.perf_counter() - start < 5
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    assert str(tmp_path / "tfds_home") in msg
    assert (f"tfds build svhn_cropped --data_dir={tmp_path / 'tfds_home'} "
            "--file_format=array_record") in msg
    assert "pip install tensorflow tensorflow-datasets scipy" in msg


def test_unprepared_builder_dir_is_reported_not_downloaded(tmp_path):
    """A version directory without data goes through tfds (download=False) and still fails fast."""
    (tmp_path / "cifar100" / "3.0.2").mkdir(parents=True)
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError, match="tfds build cifar100"):
        data.create("cifar100", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 5
    assert sorted(p.name for p in (tmp_path / "cifar100").iterdir()) == ["3.0.2"]


# ---------------------------------------------------------------- Tiny ImageNet


def _png(arr):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # lossless, under the official .JPEG names
    return buf.getvalue()


def test_tiny_imagenet_prepare_and_read(tmp_path):
    rng = np.random.default_rng(0)
    wnids = ["n02", "n01"]  # labels follow sorted order: n01 -> 0, n02 -> 1
    zpath = tmp_path / "tiny-imagenet-200.zip"
    train, test = {}, {}
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids) + "\n")
        for w in wnids:
            for k in range(3):
                img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                if w == "n02" and k == 0:  # a greyscale JPEG, as some official ones are
                    img = np.repeat(img[..., :1], 3, axis=-1)
                    payload = _png(img[..., 0])
                else:
                    payload = _png(img)
                z.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_{k}.JPEG", payload)
                train[(w, k)] = img
            z.writestr(f"tiny-imagenet-200/train/{w}/{w}_boxes.txt", "")
        lines = []
        for k, w in enumerate(["n02", "n01"]):
            test[k] = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), sorted(wnids).index(w))
            z.writestr(f"tiny-imagenet-200/val/images/val_{k}.JPEG", _png(test[k][0]))
            lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t10\t10")
        z.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(lines) + "\n")
    out = tmp_path / "data"
    prepare_tiny_imagenet.main([f"--source={zpath}", f"--data_dir={out}"])  # the CLI entry point
    ds = data.create("tiny_imagenet", data_dir=str(out), normalize="unit")
    assert ds.info == data.DatasetInfo("tiny_imagenet", 2, (64, 64, 3), 6, 2)
    x = next(ds.batches("train", 6, shuffle=False, augment=False))
    want = np.stack([train[(w, k)] for w in sorted(wnids) for k in range(3)]) / np.float32(255)
    np.testing.assert_allclose(x["image"], want, atol=1e-6)
    np.testing.assert_array_equal(x["label"], [0, 0, 0, 1, 1, 1])
    t = next(ds.batches("test", 2))
    np.testing.assert_array_equal(t["label"], [test[0][1], test[1][1]])
    np.testing.assert_allclose(t["image"][0], test[0][0] / np.float32(255), atol=1e-6)
    stats = json.loads((out / "tiny_imagenet" / "stats.json").read_text())
    np.testing.assert_allclose(stats["mean"], want.reshape(-1, 3).mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], want.reshape(-1, 3).std(0), rtol=1e-4)
    standard = data.create("tiny_imagenet", data_dir=str(out))  # default: standardised by stats.json
    assert standard.mean == pytest.approx(stats["mean"]) and standard.augment_policy == "crop_flip"
