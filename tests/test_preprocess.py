"""Oracles for the AL authors' preprocessing policies (issue 17).

MNIST: /255 minus the per-pixel training mean. CIFAR: that, then pad-4 random crop, flip,
contrast in [0.2, 1.8] and per-image standardisation (test: standardisation only).
"""

import numpy as np
import pytest

import alearn.data
from alearn.data import augment
from alearn.data.dataset import ArraySource, Dataset, DatasetInfo
from alearn.data.mnist5k import load_arrays


def test_per_image_standardize_is_tf_formula_with_the_std_floor():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(5, 4, 4, 3)).astype(np.float32)
    out = augment.per_image_standardize(x)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, rtol=1e-4)
    flat = np.full((1, 4, 4, 3), 0.5, np.float32)
    flat[0, 0, 0, 0] = 0.5 + 1e-3  # std ~ 1.4e-4 < 1/sqrt(48): divided by the floor
    got = augment.per_image_standardize(flat)
    want = (flat - flat.mean()) * np.sqrt(48.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_contrast_keeps_channel_means_and_scales_deviations_by_a_factor_in_range():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(400, 6, 6, 3)).astype(np.float32)
    out = augment.random_contrast(x, np.random.default_rng(2))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-5)
    dev_in = x - x.mean(axis=(1, 2), keepdims=True)
    dev_out = out - out.mean(axis=(1, 2), keepdims=True)
    factor = (dev_out * dev_in).sum(axis=(1, 2, 3)) / (dev_in ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(dev_out, factor[:, None, None, None] * dev_in, atol=1e-5)
    assert factor.min() >= 0.2 and factor.max() <= 1.8
    assert factor.min() < 0.3 and factor.max() > 1.7  # the whole range is used


def test_code_policy_crops_with_offsets_up_to_4_and_flips():
    n, size = 600, 9
    x = np.zeros((n, size, size, 1), np.float32)
    x[:, 4, 4, 0] = 1.0  # one bright pixel in the centre: its new place is the offset
    out = augment.apply_policy("crop_flip_contrast", x, np.random.default_rng(3), crop_padding=4)
    flat = out.reshape(n, -1).argmax(axis=1)
    dy, dx = flat // size - 4, flat % size - 4
    assert set(dy.tolist()) == set(range(-4, 5))  # every offset in [-4, 4], nothing beyond
    assert set(dx.tolist()) == set(range(-4, 5))
    # the other pixels are the image's mean after contrast (zero fill, then (x-m)f+m < peak)
    assert np.all(out.reshape(n, -1).max(axis=1) > np.median(out.reshape(n, -1), axis=1))


def test_mnist_code_policy_subtracts_the_per_pixel_training_mean():
    ds = alearn.data.create("mnist5k", augment="none", normalize="pixel_mean")
    train_x, _, test_x, _ = load_arrays()
    mean = np.asarray(train_x, np.float64).mean(axis=0) / (255.0 if train_x.dtype == np.uint8
                                                          else 1.0)
    scale = 255.0 if test_x.dtype == np.uint8 else 1.0
    batch = next(ds.batches("test", 50, shuffle=False))
    np.testing.assert_allclose(batch["image"], test_x[:50] / scale - mean, atol=1e-5)
    seen = np.concatenate([b["image"] for b in ds.batches("train", 500, shuffle=False)])
    np.testing.assert_allclose(seen.mean(axis=0), 0, atol=1e-5)  # every pixel centred
    assert np.abs(mean).max() > 0.3  # the mean image is far from a constant


def _rgb_dataset(augment_policy="crop_flip_contrast", seed=0):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    srcs = {"train": ArraySource(train, np.zeros(64, np.int32)),
            "test": ArraySource(test, np.zeros(20, np.int32))}
    info = DatasetInfo("rgb", 2, (32, 32, 3), 64, 20)
    ds = Dataset(info, srcs, augment=augment_policy, crop_padding=4,
                 pixel_norm="pixel_mean_per_image")
    return ds, train, test


def test_cifar_code_policy_test_images_are_standardised_mean_0_std_1():
    ds, train, test = _rgb_dataset()
    got = next(ds.batches("test", 20, shuffle=False))["image"]
    centred = test / 255.0 - train.mean(axis=0) / 255.0
    m = centred.mean(axis=(1, 2, 3), keepdims=True)
    s = centred.std(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(got, (centred - m) / s, atol=1e-5)
    np.testing.assert_allclose(got.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(got.std(axis=(1, 2, 3)), 1, atol=1e-4)
    # augmented, then standardised (32x32: no image falls under the 1/sqrt(N) std floor)
    tr = next(ds.batches("train", 32, epoch=1))["image"]
    np.testing.assert_allclose(tr.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(tr.std(axis=(1, 2, 3)), 1, atol=1e-4)


def test_create_rejects_unknown_normalize_and_lists_the_new_modes():
    with pytest.raises(ValueError, match="pixel_mean, pixel_mean_per_image"):
        alearn.data.create("mnist5k", normalize="per_image")
