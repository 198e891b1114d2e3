"""A plain Linen Transformer encoder classifier on mnist5k rows-as-tokens, via ``alearn.wrap``.

Each 28x28 digit is a sequence of 28 tokens (its rows, 28 features). The model is ordinary
``flax.linen``: a Dense embedding plus learned positions, ``--layers`` pre-LN encoder blocks
(``nn.MultiHeadDotProductAttention`` + a Dense MLP), mean pooling and a Dense classifier. It
is trained unmodified by each rule in ``--rules`` through ``alearn.wrap`` (every Dense and
the attention's DenseGeneral projections learn by the rule; DFA's error reaches all of them
without model help). Adam, batch 128, no augmentation; prints one JSON line per rule.

Usage:
  python -m experiments.studies.wrap_transformer [--rules=bp,fa,dfa --epochs=5 --width=64 --layers=2]
"""

from __future__ import annotations

import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import app, flags

import alearn
import alearn.data

_RULES = flags.DEFINE_list("rules", ["bp", "fa", "dfa"], "Rules to train with.")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Epochs over the 4,000 training digits.")
_WIDTH = flags.DEFINE_integer("width", 64, "Model width (d_model).")
_LAYERS = flags.DEFINE_integer("layers", 2, "Encoder blocks.")
_LR = flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")


class EncoderClassifier(nn.Module):
    """Transformer encoder over the rows of an image; plain Flax, no alearn code."""

    width: int = 64
    layers: int = 2
    heads: int = 4
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], x.shape[1], -1)  # (batch, rows, cols * channels)
        h = nn.Dense(self.width)(x)
        h = h + self.param("pos", nn.initializers.normal(0.02), (1, x.shape[1], self.width))
        for _ in range(self.layers):
            h = h + nn.MultiHeadDotProductAttention(num_heads=self.heads)(nn.LayerNorm()(h))
            m = nn.Dense(self.width)(nn.gelu(nn.Dense(2 * self.width)(nn.LayerNorm()(h))))
            h = h + m
        return nn.Dense(self.num_classes)(nn.LayerNorm()(h).mean(axis=1))


def train_one(rule_name: str, ds, epochs: int) -> dict:
    model = alearn.wrap(EncoderClassifier(width=_WIDTH.value, layers=_LAYERS.value))
    rule = alearn.rules.create(rule_name)
    test = next(ds.batches("test", 1000))
    variables = alearn.init(model, rule, jax.random.key(0), test["image"][:2])
    tx = optax.chain(rule.transform(), optax.adam(_LR.value))
    params = alearn.trainable(rule, variables)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        (loss, _, _), upd = alearn.value_and_updates(
            alearn.cross_entropy, model, rule, {**variables, **params}, x, y)
        steps, opt_state = tx.update(upd, opt_state, params)
        return optax.apply_updates(params, steps), opt_state, loss

    @jax.jit
    def accuracy(params, x, y):
        logits = model.apply({**variables, **params}, x, rule=rule)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    t0 = time.perf_counter()
    for epoch in range(epochs):
        for b in ds.batches("train", 128, epoch=epoch):
            params, opt_state, loss = step(params, opt_state, b["image"], b["label"])
    acc = float(accuracy(params, test["image"], test["label"]))
    return {"rule": rule_name, "model": "linen_transformer_encoder", "width": _WIDTH.value,
            "layers": _LAYERS.value, "epochs": epochs, "final_train_loss": round(float(loss), 4),
            "test_accuracy": round(acc, 4), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv):
    del argv
    ds = alearn.data.create("mnist5k")
    for rule in _RULES.value:
        print(json.dumps(train_one(rule, ds, _EPOCHS.value)), flush=True)


if __name__ == "__main__":
    app.run(main)
