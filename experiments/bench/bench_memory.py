"""Benchmark: training memory of BP vs ASAP (k = 2, 4): measured (XLA) and modelled (Ch. 6).

For each model (default: ResNet-18 and ResNet-34 at batch 128 on 32x32x3 inputs, and a
ResNet-18 twin without batch norm, defined here, that isolates the layer inputs; optional
``mlp8``, an 8x1024 ReLU MLP, whose step memory is dominated by parameter-sized buffers)
and rule (bp, asap k=2, asap k=4):

- measured: ``alearn.analysis.memory.compiled_step_memory`` — XLA's ``memory_analysis()``
  of one jitted training step (rule updates, SGD momentum, batch statistics), compiled
  for the default backend and never run; fractions are of BP's on the same model; also
  the temp of the updates alone (no optimizer: the activation memory);
- modelled: the activation scalars each rule keeps for its weight updates
  (``saved_activations``) and Mostafa et al.'s external memory access count
  (``access_model``, eqs. 6.1-6.2), with a Fig. 6.1-style bar plot.

Writes ``memory.json`` and ``access.png`` to ``--workdir`` and prints a markdown table.

Usage:
  python -m experiments.bench.bench_memory [--models=resnet18,resnet34,mlp8 --batch=128
                                      --workdir=/tmp/bench_memory]
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

import flax.linen as nn

import alearn
from alearn import models, rules
from alearn.analysis import memory
from alearn.models import num_params

import jax
import jax.numpy as jnp

_MODELS = flags.DEFINE_list("models", ["resnet18", "resnet34", "resnet18_nobn"],
                            "Models to measure (also: mlp8).")
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_memory", "Output directory.")

_RULES = {"bp": rules.BP(), "asap k=2": rules.create("asap", k=2),
          "asap k=4": rules.create("asap", k=4)}


class _BlockNoBN(nn.Module):
    """conv1, conv2 and (when the shape changes) the projection, without batch norm."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, h):
        s = (self.strides, self.strides)
        z = nn.relu(nn.Conv(self.features, (3, 3), strides=s, padding=1, name="conv1")(h))
        z = nn.Conv(self.features, (3, 3), padding=1, name="conv2")(z)
        if self.strides != 1 or h.shape[-1] != self.features:
            h = nn.Conv(self.features, (1, 1), strides=s, padding=0, name="shortcut_conv")(h)
        return nn.relu(z + h)


class ResNet18NoBN(nn.Module):
    """ResNet-18's convolutions and shortcuts without batch norm (isolates layer inputs),
    plain ``flax.linen``; :func:`_model` wraps it with its blocks (``stage*_block*``: the
    activation-sharing groups), as ``alearn.models.resnet.wrap_spec`` does for ResNet-18."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, train=False):
        del train
        h = nn.relu(nn.Conv(64, (3, 3), padding=1, name="stem_conv")(x))
        for s, w in enumerate((64, 128, 256, 512)):
            for b in range(2):
                stride = 2 if (s > 0 and b == 0) else 1
                h = _BlockNoBN(w, stride, name=f"stage{s}_block{b}")(h)
        return nn.Dense(self.num_classes, name="classifier")(h.mean(axis=(1, 2)))


def _model(name: str):
    if name == "resnet18_nobn":
        return alearn.wrap(ResNet18NoBN(), blocks=("stage*_block*",)), (32, 32, 3)
    if name == "mlp8":
        return models.create("mlp", 10, widths=(1024,) * 8), (784,)
    return models.create(name, 10), (32, 32, 3)


def main(argv):
    del argv
    os.makedirs(_WORKDIR.value, exist_ok=True)
    results, access = {}, {}
    for name in _MODELS.value:
        model, shape = _model(name)
        shape = (_BATCH.value, *shape)
        variables = jax.eval_shape(lambda k, m=model, s=shape: m.init(
            {"params": k}, jnp.zeros(s)), jax.random.key(0))
        n_params = num_params(variables)
        results[name], access[name] = {}, {}
        for rname, rule in _RULES.items():
            t0 = time.time()
            try:
                act = memory.saved_activations(model, rule, shape)
            except ValueError as exc:  # a k the model cannot use (mlp8: nothing shares)
                if "cannot apply" not in str(exc):
                    raise
                logging.warning("%s %s skipped: %s", name, rname, exc)
                continue
            mem = memory.compiled_step_memory(model, rule, shape, 10)
            mem["grad_temp"] = memory.compiled_step_memory(model, rule, shape, 10,
                                                           optimizer=False)["temp"]
            access[name][rname] = memory.access_model(n_params, act)
            results[name][rname] = {**mem, "saved_activations": act, "params": n_params,
                                    "access": access[name][rname]}
            logging.info("%s %s: %s (%.1f s)", name, rname, mem, time.time() - t0)
    with open(os.path.join(_WORKDIR.value, "memory.json"), "w") as f:
        json.dump(results, f, indent=1)
    memory.plot_access(access, os.path.join(_WORKDIR.value, "access.png"))
    print("| model | rule | step temp MB | temp / BP | temp+arg MB | (temp+arg) / BP "
          "| updates-only temp / BP | saved act. / BP (model) | accesses / BP (model) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, per_rule in results.items():
        bp = per_rule["bp"]
        for rname, r in per_rule.items():
            ta, ta_bp = r["temp"] + r["argument"], bp["temp"] + bp["argument"]
            print(f"| {name} | {rname} | {r['temp'] / 1e6:.0f} | {r['temp'] / bp['temp']:.3f} "
                  f"| {ta / 1e6:.0f} | {ta / ta_bp:.3f} "
                  f"| {r['grad_temp'] / bp['grad_temp']:.3f} "
                  f"| {r['saved_activations'] / bp['saved_activations']:.3f} "
                  f"| {r['access']['total'] / bp['access']['total']:.3f} |")


if __name__ == "__main__":
    from experiments import _cli
    _cli.run(main)
