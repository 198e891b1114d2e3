"""Oracles for the Sec. 3.3 metafeature distances and feature extraction."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alearn
from alearn.al.stack import MatchedBP
from alearn.analysis import metafeatures as mf
from alearn.rules import BP

# class 0: (0,0),(3,4) -> one pair, 5.   class 1: (10,0),(10,1),(10,3) -> 1, 3, 2: mean 2.
# class 2: (0,10),(0,12) -> 2.           intra = (5 + 2 + 2) / 3 = 3.
X = np.array([[0, 0], [10, 0], [3, 4], [0, 10], [10, 1], [0, 12], [10, 3]], np.float32)
Y = np.array([0, 1, 0, 2, 1, 2, 1])


def test_intra_class_distance_hand_example():
    assert mf.intra_class_distance(X, Y) == pytest.approx(3.0, rel=1e-6)


def test_inter_class_distance_hand_example():
    c0, c1, c2 = (1.5, 2.0), (10.0, 4.0 / 3.0), (0.0, 11.0)
    d = [math.hypot(a[0] - b[0], a[1] - b[1]) for a, b in ((c0, c1), (c0, c2), (c1, c2))]
    np.testing.assert_allclose(mf.class_centroids(X, Y), [c0, c1, c2], rtol=1e-6)
    assert mf.inter_class_distance(X, Y) == pytest.approx(sum(d) / 3, rel=1e-5)
    q = mf.metafeature_quality(X, Y)
    assert q["ratio"] == pytest.approx(sum(d) / 3 / 3.0, rel=1e-5)


def test_distances_are_invariant_to_row_order_and_scale_linearly():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = rng.integers(0, 4, 60)
    perm = rng.permutation(60)
    a, b = mf.metafeature_quality(x, y), mf.metafeature_quality(x[perm] * 3, y[perm])
    assert b["intra"] == pytest.approx(3 * a["intra"], rel=1e-4)
    assert b["inter"] == pytest.approx(3 * a["inter"], rel=1e-4)
    assert b["ratio"] == pytest.approx(a["ratio"], rel=1e-4)
    with pytest.raises(ValueError, match="at least 2 examples"):
        mf.intra_class_distance(np.zeros((2, 3)), np.array([0, 1]))


def test_model_features_read_sown_layers():
    model = alearn.wrap(MatchedBP(num_classes=3, layers=(("dense", 4), ("dense", 3))))
    x = jax.random.normal(jax.random.key(0), (5, 2, 2, 1))
    v = model.init(jax.random.key(1), x, rule=BP())
    feats = mf.model_features(model.apply, v, x, rule=BP(), train=False)
    assert sorted(feats) == ["net/layer1", "net/layer2"]
    k, b = v["params"]["net"]["Dense_0"]["kernel"], v["params"]["net"]["Dense_0"]["bias"]
    np.testing.assert_allclose(feats["net/layer1"], jax.nn.relu(x.reshape(5, -1) @ k + b),
                               rtol=1e-6)
    np.testing.assert_allclose(feats["net/layer2"], model.apply(v, x, rule=BP()), rtol=1e-6)
    captured = mf.model_features(model.apply, v, x, capture=True, rule=BP())
    assert "net/Dense_0/__call__" in captured
