"""Benchmark: training-step time of each weight-transport rule relative to BP's.

Same model, same initial weights where shared, same batch (128 random 28x28x1 images),
same optimizer as the Table 5.2 configs (``optax.chain(rule.transform(), base)``, base = SGD
momentum 0.9 with weight decay 5e-4 on the params; KP with ``decay_kernel=False`` so W is
decayed once, by the base, and B by KP's transform), the trainer's own jitted data-parallel
step (``alearn.train.make_train_step``):

- MLP 784-1024-1024-10 (alearn's ``mlp`` model);
- a small CNN (conv3x3x32-pool-conv3x3x64-pool-FC128-FC10, as in ``bench_overhead``).

Each repeat times ``--steps`` steps of one rule ending in ``block_until_ready``; repeats
cycle through the rules so machine noise hits all alike; the figure is median(rule) /
median(bp) (also min(rule) / min(bp), less sensitive to a shared machine). WM's engaged
step is timed without its mirror phase (it equals FA's); its
mirror phase (``WM.mirror`` on all layers, one mirror step of 128 noise samples, jitted) is
reported separately, also relative to BP's step. ``xla_flops_ratio`` / ``xla_bytes_ratio``
come from XLA's cost analysis of each compiled step (noise-free structural figures).

Usage:
  python -m experiments.bench.bench_rules [--steps=20 --repeats=7 --models=mlp,cnn]
"""

from __future__ import annotations

import json
import statistics
import time

import flax.linen as nn
import jax
import numpy as np
from absl import app, flags

import alearn
from alearn import train
from experiments.bench._bench_models import SmallCNN

_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repeats per rule (cycled).")
_MODELS = flags.DEFINE_list("models", ["mlp", "cnn"], "Which benchmarks to run (mlp, cnn).")
_RULES = flags.DEFINE_list("rules", ["bp", "fa", "dfa", "sign", "kp", "wm"], "Rules to time.")
_BATCH = 128


def _runner(model, rule, x, y, mesh):
    base = train.create_optimizer("sgd", 0.01, momentum=0.9, weight_decay=5e-4)
    opt = train.create_rule_optimizer(rule, base)
    state = train.replicate(train.create_train_state(model, rule, opt, jax.random.key(0), x),
                            mesh)
    batch = train.shard_batch({"image": x, "label": y}, mesh)
    step = train.make_train_step(model, rule, opt, mesh=mesh, step_hook=None)  # engaged mode
    cost = step.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    cost = {"flops": float(cost.get("flops", 0)), "bytes": float(cost.get("bytes accessed", 0))}

    def run(n):
        nonlocal state
        for _ in range(n):
            state, m = step(state, batch)
        jax.block_until_ready((state, m))

    mirror = None
    if rule.name == "wm":
        mirror_fn = jax.jit(rule.mirror)
        params, fb = jax.tree.map(lambda a: a.copy(), (state.trainable["params"],
                                                         state.fixed["feedback"]))

        def mirror(n):
            nonlocal fb
            for i in range(n):
                fb = mirror_fn(params, fb, jax.random.key(i))
            jax.block_until_ready(fb)

    return run, mirror, cost


def bench(name: str, model, rules: list[str], steps: int, repeats: int) -> dict:
    """Per-step medians (ms) of every rule and their ratio to BP's."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(_BATCH, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, _BATCH).astype(np.int32)
    mesh = train.data_mesh()
    runs, costs = {}, {}
    for r in rules:
        hparams = {"decay_kernel": False} if r == "kp" else {}
        runs[r], mirror, costs[r] = _runner(model, alearn.rules.create(r, **hparams), x, y, mesh)
        if mirror is not None:
            runs["wm_mirror_phase"] = mirror
    for fn in runs.values():
        fn(3)  # compile + warm-up
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            t = time.perf_counter()
            fn(steps)
            times[k].append((time.perf_counter() - t) / steps * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    base, base_low = med.get("bp"), low.get("bp")
    return {"benchmark": name, "batch": _BATCH, "steps": steps, "repeats": repeats,
            "ms": {k: round(v, 3) for k, v in med.items()},
            "ratio_to_bp": {k: round(v / base, 3) for k, v in med.items()} if base else None,
            "min_ms": {k: round(v, 3) for k, v in low.items()},
            "min_ratio_to_bp": ({k: round(v / base_low, 3) for k, v in low.items()}
                                if base_low else None),
            "xla_flops_ratio": {k: round(c["flops"] / costs["bp"]["flops"], 3)
                                for k, c in costs.items()} if "bp" in costs else None,
            "xla_bytes_ratio": {k: round(c["bytes"] / costs["bp"]["bytes"], 3)
                                for k, c in costs.items()} if "bp" in costs else None,
            "devices": f"{jax.local_device_count()} x {jax.devices()[0].platform}"}


def main(argv):
    del argv
    models = {"mlp": alearn.models.create("mlp", 10, widths=(1024, 1024)), "cnn": alearn.wrap(SmallCNN())}
    for name in _MODELS.value:
        if name not in models:
            raise app.UsageError(f"unknown benchmark {name!r}; choose from: {', '.join(models)}")
        print(json.dumps(bench(name, models[name], _RULES.value, _STEPS.value,
                               _REPEATS.value)), flush=True)


if __name__ == "__main__":
    from experiments import _cli
    _cli.run(main)
