"""Benchmark: BP training-step time through alearn vs a plain ``jax.grad`` + optax step.

Same architecture, same initial weights, same batch, same optimizer (SGD momentum 0.9):

- MLP 784-1024-1024-10 (alearn's ``mlp`` model vs a ``flax.linen.Dense`` twin), batch 128;
- a small CNN (conv3x3x32-pool-conv3x3x64-pool-FC128-FC10: ``_bench_models.SmallCNN``, plain
  ``flax.linen`` with ``alearn.nn.max_pool``, through ``alearn.wrap``, vs its ``flax.linen``
  twin ``PlainCNN``), batch 128, 28x28x1 inputs.

The alearn side is the trainer's own jitted step (``alearn.train.make_train_step``: TrainState,
``optax.chain(rule.transform(), sgd)``, data-parallel sharding over the local devices); the
plain side is ``jax.jit`` of ``value_and_grad`` + ``optax.sgd``. Both report loss and accuracy.
Each repeat times ``--steps`` steps ending in ``block_until_ready``; repeats alternate between
the two so machine noise hits both alike. The figure is median(alearn) / median(plain);
``paired_ratio_median`` is the median over repeats of the back-to-back ratios.

Usage:
  python -m experiments.bench.bench_overhead [--steps=50 --repeats=15 --models=mlp,cnn]
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import alearn
from alearn import train
from experiments.bench._bench_models import PlainCNN, PlainMLP, SmallCNN

_STEPS = flags.DEFINE_integer("steps", 50, "Steps per timed repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed repeats per side (alternating).")
_MODELS = flags.DEFINE_list("models", ["mlp", "cnn"], "Which benchmarks to run (mlp, cnn).")
_BATCH = 128


def _plain_step(model, optimizer):
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "accuracy": acc}

    return jax.jit(step, donate_argnums=(0, 1))


def bench(name: str, alearn_model, plain_model, steps: int, repeats: int) -> dict:
    """Times both steps on one batch; returns per-step medians (ms) and their ratio."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(_BATCH, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, _BATCH).astype(np.int32)
    optimizer = optax.sgd(0.01, momentum=0.9)
    rule = alearn.rules.create("bp")

    full_opt = train.create_rule_optimizer(rule, optimizer)
    mesh = train.data_mesh()
    state = train.create_train_state(alearn_model, rule, full_opt, jax.random.key(0), x)
    params = jax.tree.map(jnp.array, state.trainable["params"])  # the same initial weights
    # Same parameter tree as the plain twin (raises if the structures differ).
    jax.tree.map(lambda a, b: None, params, plain_model.init(jax.random.key(0), x)["params"])
    state = train.replicate(state, mesh)
    batch = train.shard_batch({"image": x, "label": y}, mesh)
    a_step = train.make_train_step(alearn_model, rule, full_opt, mesh=mesh)

    p_step = _plain_step(plain_model, optimizer)
    p_state = (params, optimizer.init(params))
    px, py = jax.device_put(x), jax.device_put(y)

    def run_a(n):
        nonlocal state
        for _ in range(n):
            state, m = a_step(state, batch)
        jax.block_until_ready((state, m))

    def run_p(n):
        nonlocal p_state
        for _ in range(n):
            *p_state, m = p_step(*p_state, px, py)
        jax.block_until_ready((p_state, m))

    run_a(5), run_p(5)  # compile + warm-up
    times = {"alearn": [], "plain": []}
    for _ in range(repeats):
        for side, fn in (("alearn", run_a), ("plain", run_p)):
            t = time.perf_counter()
            fn(steps)
            times[side].append((time.perf_counter() - t) / steps * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"benchmark": name, "batch": _BATCH, "steps": steps, "repeats": repeats,
            "alearn_ms": round(med["alearn"], 3), "plain_ms": round(med["plain"], 3),
            "ratio": round(med["alearn"] / med["plain"], 4),
            "paired_ratio_median": round(statistics.median(
                a / p for a, p in zip(times["alearn"], times["plain"])), 4),
            "devices": f"{jax.local_device_count()} x {jax.devices()[0].platform}"}


def main(argv):
    del argv
    models = {
        "mlp": (alearn.models.create("mlp", 10, widths=(1024, 1024)), PlainMLP()),
        "cnn": (alearn.wrap(SmallCNN()), PlainCNN()),
    }
    for name in _MODELS.value:
        if name not in models:
            raise app.UsageError(f"unknown benchmark {name!r}; choose from: {', '.join(models)}")
        print(json.dumps(bench(name, *models[name], _STEPS.value, _REPEATS.value)), flush=True)


if __name__ == "__main__":
    from experiments import _cli
    _cli.run(main)
