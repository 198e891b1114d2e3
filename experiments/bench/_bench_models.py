"""Small models shared by the step-time benchmarks (not a paper model), and the trainer
step they time."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

import alearn
from alearn import _layers as layers, train
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
    step = train.make_train_step(model, rule, optimizer, mesh=mesh,
                                 step_hook=setup.step_hook_for(rule, model),
                                 compiler_options=compiler_options)
    return step, state, train.shard_batch({"image": x, "label": y}, mesh), mesh


class SmallCNN(nn.Module):
    """conv3x3x32-pool-conv3x3x64-pool-FC128-FC10 built from alearn's rule-pluggable layers."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, rule=alearn.rules.BP(), train=False):
        del train
        tape = layers.Tape(rule, x.shape[0], self.num_classes)
        for f in (32, 64):
            x = layers.max_pool(nn.relu(layers.Conv(f, (3, 3))(x, tape)), (2, 2), (2, 2))
        x = nn.relu(layers.Dense(128)(x.reshape(x.shape[0], -1), tape))
        return tape.finish(layers.Dense(self.num_classes)(x, tape))


class LeNet5(nn.Module):
    """LeNet-5 as BioTorch writes it, for 28x28x1 inputs: conv5x5x6-pool-conv5x5x16-pool-
    FC120-FC84-FC10 (ReLU, 2x2 max-pool, VALID convolutions), from alearn's layers."""

    num_classes: int = 10
    conv_impl: str = "auto"
    pool: str = "alearn"  # "alearn" (layers.max_pool) or "flax" (nn.max_pool), to compare

    @nn.compact
    def __call__(self, x, *, rule=alearn.rules.BP(), train=False):
        del train
        tape = layers.Tape(rule, x.shape[0], self.num_classes)
        for f in (6, 16):
            x = layers.Conv(f, (5, 5), padding="VALID", impl=self.conv_impl)(x, tape)
            x = (layers.max_pool if self.pool == "alearn" else nn.max_pool)(
                nn.relu(x), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        for w in (120, 84):
            x = nn.relu(layers.Dense(w)(x, tape))
        return tape.finish(layers.Dense(self.num_classes)(x, tape))


class PlainMLP(nn.Module):
    """``flax.linen`` twin of alearn's mlp 784-1024-1024-10 (same parameter tree)."""

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for w in (1024, 1024):
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(10)(x)


class PlainCNN(nn.Module):
    """``flax.linen`` twin of ``SmallCNN`` (same parameter tree)."""

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate((32, 64)):
            x = nn.max_pool(nn.relu(nn.Conv(f, (3, 3), name=f"Conv_{i}")(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Dense(128, name="Dense_0")(x.reshape(x.shape[0], -1)))
        return nn.Dense(10, name="Dense_1")(x)
