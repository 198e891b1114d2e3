"""Tiny AL sequence networks and padded token batches shared by tests/test_al_seq*.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import alearn.al as al

VOCAB, T, CLASSES = 11, 5, 3
KW = {"al_lstm": dict(width=8, y_width=6, depth=2, vocab_size=VOCAB),
      "al_transformer": dict(width=8, y_width=6, depth=2, heads=2, max_len=7,
                             vocab_size=VOCAB)}


def _net(name, shape=(T,), **kw):
    return al.create(name, CLASSES, shape, spec_overrides={**KW[name], **kw}, lr=1e-2)


@functools.lru_cache(maxsize=None)
def _states(name):
    return _net(name).init(jax.random.key(1))


def _tokens(seed=0, n=6):
    """Token ids with right padding (0): lengths 1 … T, one row without padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (n, T))
    lengths = np.concatenate([[T], rng.integers(1, T + 1, n - 1)])
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return jnp.asarray(ids, jnp.int32), jnp.asarray(rng.integers(0, CLASSES, n))
