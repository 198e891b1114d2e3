"""Dimension matching of shared activations (ASAP thesis Sec. 5.1.1): hand examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alearn.rules import dimension_matching as dm

MAP = jnp.arange(16.0).reshape(1, 4, 4, 1)  # rows 0-3, 4-7, 8-11, 12-15


def test_method1_tiles_channels_and_max_pools():
    out = dm.match(MAP, (1, 2, 2, 2), method=1)
    want = np.array([[5.0, 7.0], [13.0, 15.0]])
    np.testing.assert_array_equal(out[0, :, :, 0], want)
    np.testing.assert_array_equal(out[0, :, :, 1], want)


def test_method2_tiles_channels_and_average_pools():
    out = dm.match(MAP, (1, 2, 2, 3), method=2)
    want = np.array([[2.5, 4.5], [10.5, 12.5]])
    for c in range(3):
        np.testing.assert_allclose(out[0, :, :, c], want)


def test_method3_projects_channels_then_average_pools():
    key = jax.random.key(0)
    proj = dm.projection(key, MAP.shape, (1, 2, 2, 2))
    assert proj.shape == (1, 2)
    out = dm.match(MAP, (1, 2, 2, 2), method=3, proj=proj)
    want = np.array([[2.5, 4.5], [10.5, 12.5]])[..., None] * np.asarray(proj[0])
    np.testing.assert_allclose(out[0], want, rtol=1e-6)
    with pytest.raises(ValueError, match="projection"):
        dm.match(MAP, (1, 2, 2, 2), method=3)


def test_non_integer_ratio_pads_by_edge_and_growing_repeats():
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    # padded to 4x4 by edge replication, then 2x2 max: [[4, 5], [7, 8]]
    np.testing.assert_array_equal(dm.match(x, (1, 2, 2, 1), 1)[0, :, :, 0], [[4, 5], [7, 8]])
    up = dm.match(jnp.array([[[[1.0], [2.0]]]]), (1, 1, 3, 1), 1)  # 1x2 -> 1x3 nearest
    np.testing.assert_array_equal(up[0, 0, :, 0], [1, 1, 2])


def test_channel_reduction_pools_adjacent_groups():
    x = jnp.array([1.0, 4.0, 3.0, 2.0]).reshape(1, 1, 1, 4)
    np.testing.assert_array_equal(dm.match(x, (1, 1, 1, 2), 1).ravel(), [4, 3])
    np.testing.assert_array_equal(dm.match(x, (1, 1, 1, 2), 2).ravel(), [2.5, 2.5])


def test_vectors_tile_and_maps_flatten_or_pool_into_dense_inputs():
    v = jnp.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(dm.match(v, (1, 7), 1)[0], [1, 2, 3, 1, 2, 3, 1])
    m = jnp.arange(32.0).reshape(1, 4, 4, 2)
    np.testing.assert_array_equal(dm.match(m, (1, 32), 1), m.reshape(1, 32))  # exact flatten
    # F = 8 = 2*2*2: pooled to a 2x2 grid of the map's 2 channels, then flattened
    grid = dm.match(m, (1, 8), 1).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(grid[0, 0, 0], [10, 11])  # max of rows 0-1, cols 0-1
    # F = 3 (no grid): global max per channel (30, 31), tiled to 3
    np.testing.assert_array_equal(dm.match(m, (1, 3), 1)[0], [30, 31, 30])


def test_identity_and_errors():
    assert dm.match(MAP, MAP.shape, 1) is MAP
    with pytest.raises(ValueError, match="match=4"):
        dm.validate("asap", 4)
    with pytest.raises(ValueError, match="cannot match"):
        dm.match(jnp.ones((1, 4)), (1, 2, 2, 1), 1)
