"""Benchmark: train-step time of a user's wrapped plain-Flax model / alearn's own model.

Same architecture, same initial weights and feedback, same batch, same trainer step
(``alearn.train.make_train_step``, SGD momentum 0.9): alearn's ``mlp`` (784-1024-1024-10)
vs ``alearn.wrap`` of a ``flax.linen.Dense`` twin, and ``experiments.bench._bench_models.SmallCNN``
(conv3x3x32-pool-conv3x3x64-pool-FC128-FC10, ``alearn.nn.max_pool``) vs ``alearn.wrap`` of
its ``flax.linen`` twin (``flax.linen.max_pool``); batch 128. Since issue 25 both sides go
through ``alearn.wrap`` (the "native" side is alearn's own plain-Flax model as
``alearn.models.create`` returns it, or ``alearn.wrap(SmallCNN())``), so the figure checks
that a user's model trains as fast as alearn's. Repeats alternate between the two sides;
the figure is median(wrapped) / median(native) per (model, rule), target <= 1.02;
``same_flops_and_bytes`` compares XLA's cost analysis of the two compiled steps.

Usage:
  python -m experiments.bench.bench_wrap [--steps=20 --repeats=9 --models=mlp,cnn --rules=bp,fa,dfa]
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import numpy as np
import optax
from absl import app, flags

import alearn
from alearn import train
from experiments.bench._bench_models import PlainCNN, PlainMLP, SmallCNN

_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 9, "Timed repeats per side (alternating).")
_MODELS = flags.DEFINE_list("models", ["mlp", "cnn"], "Benchmarks (mlp, cnn).")
_RULES = flags.DEFINE_list("rules", ["bp", "fa", "dfa"], "Rules to time.")
_BATCH = 128


def _runner(model, rule, variables, x, y, mesh):
    opt = train.create_rule_optimizer(rule, optax.sgd(0.01, momentum=0.9))
    state = train.create_train_state(model, rule, opt, jax.random.key(0), x)
    variables = jax.tree.map(lambda a: np.array(a, copy=True), variables)  # steps donate
    trainable = alearn.trainable(rule, variables)
    state = state.replace(trainable=trainable,
                          fixed={k: v for k, v in variables.items() if k not in trainable},
                          opt_state=opt.init(trainable))
    state = train.replicate(state, mesh)
    batch = train.shard_batch({"image": x, "label": y}, mesh)
    step = train.make_train_step(model, rule, opt, mesh=mesh)
    cost = step.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost

    def run(n):
        nonlocal state
        for _ in range(n):
            state, m = step(state, batch)
        jax.block_until_ready((state, m))

    run.cost = (float(cost.get("flops", 0)), float(cost.get("bytes accessed", 0)))
    return run


def bench(name: str, native, plain, rule_name: str, steps: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(_BATCH, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, _BATCH).astype(np.int32)
    rule = alearn.rules.create(rule_name)
    wrapped = alearn.wrap(plain)
    variables = alearn.init(native, rule, jax.random.key(0), x)
    jax.tree.map(lambda a, b: None, variables,  # the same trees (raises otherwise)
                 alearn.init(wrapped, rule, jax.random.key(0), x))
    mesh = train.data_mesh()
    sides = {"wrapped": _runner(wrapped, rule, variables, x, y, mesh),
             "native": _runner(native, rule, variables, x, y, mesh)}
    for fn in sides.values():
        fn(3)  # compile + warm-up
    times = {k: [] for k in sides}
    for _ in range(repeats):
        for side, fn in sides.items():
            t = time.perf_counter()
            fn(steps)
            times[side].append((time.perf_counter() - t) / steps * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"benchmark": name, "rule": rule_name, "batch": _BATCH, "steps": steps,
            "repeats": repeats, "wrapped_ms": round(med["wrapped"], 3),
            "native_ms": round(med["native"], 3),
            "ratio": round(med["wrapped"] / med["native"], 4),
            "paired_ratio_median": round(statistics.median(
                a / b for a, b in zip(times["wrapped"], times["native"])), 4),
            "same_flops_and_bytes": sides["wrapped"].cost == sides["native"].cost,
            "devices": f"{jax.local_device_count()} x {jax.devices()[0].platform}"}


def main(argv):
    del argv
    models = {"mlp": (alearn.models.create("mlp", 10, widths=(1024, 1024)), PlainMLP()),
              "cnn": (alearn.wrap(SmallCNN()), PlainCNN())}
    for name in _MODELS.value:
        if name not in models:
            raise app.UsageError(f"unknown benchmark {name!r}; choose from: {', '.join(models)}")
        for rule in _RULES.value:
            print(json.dumps(bench(name, *models[name], rule, _STEPS.value, _REPEATS.value)),
                  flush=True)


if __name__ == "__main__":
    app.run(main)
