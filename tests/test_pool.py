"""alearn._layers.max_pool equals flax.linen.max_pool in value and gradient, ties included."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alearn._layers import max_pool

CASES = [  # (shape, window, strides, padding)
    ((3, 8, 8, 4), (2, 2), (2, 2), "VALID"),
    ((2, 7, 9, 3), (2, 2), (2, 2), "VALID"),  # the last partial row/column is dropped
    ((2, 7, 9, 3), (2, 2), (2, 2), "SAME"),  # padded with -inf
    ((2, 7, 5, 3), (3, 2), (3, 2), ((1, 1), (0, 1))),  # explicit padding, 3x2 windows
    ((2, 5, 5, 3), (2, 2), None, "VALID"),  # flax's default stride 1: overlapping
    ((2, 9, 9, 2), (3, 3), (2, 2), "VALID"),  # overlapping: flax's own path
    ((2, 12, 5), (4,), (4,), "VALID"),  # 1-D windows
]


def _ties(key, shape):
    """Small integers after a ReLU: many equal maxima in a window, as in real networks."""
    return jax.nn.relu(jax.random.randint(jax.random.key(key), shape, -3, 3).astype(jnp.float32))


@pytest.mark.parametrize("shape,window,strides,padding", CASES)
@pytest.mark.parametrize("data", ["ties", "normal"])
def test_value_and_gradient_equal_flax_max_pool(shape, window, strides, padding, data):
    x = (_ties(0, shape) if data == "ties"
         else jax.random.normal(jax.random.key(1), shape, jnp.float32))

    def ref(x):
        return nn.max_pool(x, window, strides, padding)

    want, ref_vjp = jax.vjp(ref, x)
    got, vjp = jax.vjp(lambda x: max_pool(x, window, strides, padding), x)
    np.testing.assert_array_equal(got, want)
    g = jax.random.normal(jax.random.key(2), want.shape, jnp.float32)
    np.testing.assert_array_equal(jax.jit(vjp)(g)[0], ref_vjp(g)[0])


def test_tie_goes_to_the_first_element_of_the_window():
    x = jnp.array([[0., 5.], [5., 5.]]).reshape(1, 2, 2, 1)
    (dx,) = jax.grad(lambda x: max_pool(x, (2, 2), (2, 2)).sum())(x).reshape(1, 4, 1).transpose(2, 0, 1)
    np.testing.assert_array_equal(dx.ravel(), [0., 1., 0., 0.])


@pytest.mark.parametrize("shape,window,strides,padding", CASES[:4])
def test_forward_mode_equals_flax_max_pool(shape, window, strides, padding):
    # Without ties: flax's forward mode breaks ties in reduce_window's reduction order.
    x = jax.random.normal(jax.random.key(3), shape, jnp.float32)
    t = jax.random.normal(jax.random.key(4), shape, jnp.float32)
    want = jax.jvp(lambda x: nn.max_pool(x, window, strides, padding), (x,), (t,))
    got = jax.jvp(lambda x: max_pool(x, window, strides, padding), (x,), (t,))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_integer_input_takes_flax_path():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.int32).reshape(2, 4, 4, 1)
    np.testing.assert_array_equal(max_pool(x, (2, 2), (2, 2), "SAME"),
                                  nn.max_pool(x, (2, 2), (2, 2), "SAME"))
