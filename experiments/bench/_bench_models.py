"""Small plain ``flax.linen`` models shared by the step-time benchmarks (not paper models;
the benchmarks train them through ``alearn.wrap`` like every model), and the trainer step
they time."""

from __future__ import annotations

import contextlib
import os

import flax.linen as nn
import jax
import numpy as np

import alearn
from alearn import train
from alearn.train import setup


def synthetic_batch(shape=(28, 28, 1), batch: int = 128, seed: int = 0):
    """(images, labels): standard-normal float32 images, labels in 0..9."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, *shape)).astype(np.float32),
            rng.integers(0, 10, batch).astype(np.int32))


def trainer_step(model, rule, optimizer, *, shape=(28, 28, 1), batch: int = 128, mesh=None,
                 compiler_options: dict | None = None):
    """The real trainer step for a benchmark: ``(step, state, placed batch, mesh)``.

    ``make_train_step`` with the rule's own hook on ``mesh`` (default: all local devices),
    the state initialised by one jitted call (the same values as eager init, which compiles
    every initializer separately) and replicated, and one synthetic batch
    (:func:`synthetic_batch`) placed once.
    """
    mesh = mesh if mesh is not None else train.data_mesh()
    x, y = synthetic_batch(shape, batch)
    init = jax.jit(lambda key: train.create_train_state(model, rule, optimizer, key, x))
    state = train.replicate(init(jax.random.key(0)), mesh)
    step = make_step(model, rule, optimizer, mesh, compiler_options=compiler_options)
    return step, state, train.shard_batch({"image": x, "label": y}, mesh), mesh


def make_step(model, rule, optimizer, mesh, *, compiler_options: dict | None = None):
    """The trainer's step alone (``make_train_step`` with the rule's own hook), untraced."""
    return train.make_train_step(model, rule, optimizer, mesh=mesh,
                                 step_hook=setup.step_hook_for(rule, model),
                                 compiler_options=compiler_options)


class SmallCNN(nn.Module):
    """conv3x3x32-pool-conv3x3x64-pool-FC128-FC10, plain ``flax.linen`` with alearn's
    fast pool (:func:`alearn.nn.max_pool`); train it through ``alearn.wrap(SmallCNN())``.
    Its parameter tree is :class:`PlainCNN`'s (``Conv_0``, ``Conv_1``, ``Dense_0``,
    ``Dense_1``)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, train=False):
        del train
        for f in (32, 64):
            x = alearn.nn.max_pool(nn.relu(nn.Conv(f, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(x)


class LeNet5(nn.Module):
    """LeNet-5 as BioTorch writes it, for 28x28x1 inputs: conv5x5x6-pool-conv5x5x16-pool-
    FC120-FC84-FC10 (ReLU, 2x2 max-pool, VALID convolutions), plain ``flax.linen``; train
    it through ``alearn.wrap(LeNet5())``.

    The wrapper computes each convolution by ``alearn._layers.conv_impl``'s forms (``auto``:
    timed per shape on CPU); :func:`conv_impl` forces one for the steps traced inside it.
    """

    num_classes: int = 10
    pool: str = "alearn"  # "alearn" (alearn.nn.max_pool) or "flax" (nn.max_pool), to compare

    @nn.compact
    def __call__(self, x, *, train=False):
        del train
        for f in (6, 16):
            x = nn.Conv(f, (5, 5), padding="VALID")(x)
            x = (alearn.nn.max_pool if self.pool == "alearn" else nn.max_pool)(
                nn.relu(x), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        for w in (120, 84):
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(self.num_classes)(x)


@contextlib.contextmanager
def conv_impl(impl: str | None):
    """Forces the convolution form (``xla``, ``im2col``, ``banded`` or ``auto``) of every
    wrapped convolution traced inside the block, through the ``ALEARN_CONV_IMPL`` override
    (read when a step is traced, so trace the step inside: call it once, or lower it; an
    unknown name fails there); ``None`` changes nothing."""
    if impl is None:
        yield
        return
    old = os.environ.get("ALEARN_CONV_IMPL")
    os.environ["ALEARN_CONV_IMPL"] = impl
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ALEARN_CONV_IMPL", None)
        else:
            os.environ["ALEARN_CONV_IMPL"] = old


class PlainMLP(nn.Module):
    """``flax.linen`` twin of alearn's mlp 784-1024-1024-10 (same parameter tree)."""

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for w in (1024, 1024):
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(10)(x)


class PlainCNN(nn.Module):
    """``SmallCNN`` with ``flax.linen.max_pool``: a user's own model (same parameter tree)."""

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate((32, 64)):
            x = nn.max_pool(nn.relu(nn.Conv(f, (3, 3), name=f"Conv_{i}")(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Dense(128, name="Dense_0")(x.reshape(x.shape[0], -1)))
        return nn.Dense(10, name="Dense_1")(x)
