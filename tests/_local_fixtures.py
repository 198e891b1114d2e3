"""Shared batch and jitted entry points for the local-learning rule tests (not public API)."""

import jax
import jax.numpy as jnp
import numpy as np

import alearn

KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (6, 8))
Y = jnp.arange(6) % 3
jit_updates = jax.jit(alearn.rule_updates, static_argnums=(0, 1))
jit_init = jax.jit(alearn.init, static_argnums=(0, 1))


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)
