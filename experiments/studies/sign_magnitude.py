"""Sign symmetry's feedback magnitude on a LeNet-5 without BatchNorm (issue 10, item 6).

Trains LeNet-5 (conv5x5x6-pool-conv5x5x16-pool-FC120-FC84-FC10, ReLU, no normalisation)
on the bundled mnist5k digits with plain SGD, lr 0.01, batch 32, for each sign-symmetry
magnitude and BP, and prints the test accuracy after every epoch.

Command (docs/notes/rules_wt.md has the figures):
  python -m experiments.studies.sign_magnitude --epochs=3
"""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import alearn
from alearn.data import mnist5k

_EPOCHS = flags.DEFINE_integer("epochs", 3, "Training epochs.")
_LR = flags.DEFINE_float("lr", 0.01, "SGD learning rate.")
_RULES = flags.DEFINE_list("rules", ["bp", "sign:unit", "sign:mean_abs"],
                           "rule or sign:<magnitude> entries.")


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 inputs (no BatchNorm), plain ``flax.linen``; trained through
    ``alearn.wrap``."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, train=False):
        del train
        x = alearn.nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding=2)(x)), (2, 2), (2, 2))
        x = alearn.nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(120)(x))
        x = nn.relu(nn.Dense(84)(x))
        return nn.Dense(self.num_classes)(x)


def run(rule, epochs: int, lr: float, batch: int = 32, seed: int = 0) -> list[float]:
    """Test accuracy after each epoch."""
    tx, ty, vx, vy = mnist5k.load_arrays()
    tx = np.asarray(tx, np.float32) / 255.0
    vx = np.asarray(vx, np.float32) / 255.0
    model = alearn.wrap(LeNet5())
    variables = alearn.init(model, rule, jax.random.key(seed), tx[:2])
    opt = optax.sgd(lr)
    tv = alearn.trainable(rule, variables)
    state = opt.init(tv)

    @jax.jit
    def step(tv, state, x, y):
        upd = alearn.rule_updates(model, rule, {**variables, **tv}, x, y)
        u, state = opt.update(upd, state, tv)
        return optax.apply_updates(tv, u), state

    @jax.jit
    def accuracy(tv):
        logits = model.apply({**variables, **tv}, vx, rule=rule)
        return jnp.mean(jnp.argmax(logits, -1) == vy)

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(len(tx))
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            tv, state = step(tv, state, tx[idx], ty[idx])
        out.append(round(float(accuracy(tv)), 4))
    return out


def main(argv):
    del argv
    for entry in _RULES.value:
        name, _, magnitude = entry.partition(":")
        rule = alearn.rules.create(name, **({"magnitude": magnitude} if magnitude else {}))
        print(json.dumps({"rule": entry, "lr": _LR.value,
                          "test_accuracy_per_epoch": run(rule, _EPOCHS.value, _LR.value)}),
              flush=True)


if __name__ == "__main__":
    app.run(main)
