"""Benchmark: training-step time of the activation-sharing / local rules relative to BP.

Every rule runs the trainer's own jitted step (``alearn.train.make_train_step``,
``optax.chain(rule.transform(), sgd momentum 0.9)``) on the same model and batch; repeats
alternate over the rules so machine noise hits all alike. Reports the median ms per step
and the ratio to BP's median (target <= 1.10 for the sharing rules).

Usage:
  python -m experiments.bench.bench_rules_as [--model=alexnet --width=0.25 --steps=10 --repeats=7
                                        --rules=bp,foa,as,asap,asap4,asfp,asfp_lc]

A rule that cannot apply to the model (asap4 = ASAP k=4 on the AlexNet, whose conv layers
group exactly as k=2's) is skipped with its reason.
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

_MODEL = flags.DEFINE_string("model", "alexnet", "Model name (alearn.models).")
_WIDTH = flags.DEFINE_float("width", 0.25, "Width multiplier.")
_SHAPE = flags.DEFINE_list("shape", ["28", "28", "1"], "Input shape without the batch.")
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repeats per rule (alternating).")
_RULES = flags.DEFINE_list("rules", ["bp", "foa", "as", "asap", "asap4", "asfp", "asfp_lc",
                                     "local_fixed", "predsim"], "Rules (asap4 = asap k=4).")


def _rule(name: str):
    if name == "asap4":
        return alearn.rules.create("asap", k=4)
    return alearn.rules.create(name)


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    shape = (_BATCH.value, *(int(s) for s in _SHAPE.value))
    x = rng.normal(size=shape).astype(np.float32)
    y = rng.integers(0, 10, _BATCH.value).astype(np.int32)
    model = alearn.models.create(_MODEL.value, 10, width_multiplier=_WIDTH.value)
    mesh = train.data_mesh()
    batch = train.shard_batch({"image": x, "label": y}, mesh)
    runners = {}
    for name in _RULES.value:
        rule = _rule(name)
        opt = train.create_rule_optimizer(rule, optax.sgd(0.01, momentum=0.9))
        try:
            state = train.replicate(
                train.create_train_state(model, rule, opt, jax.random.key(0), x), mesh)
        except ValueError as exc:  # asap4 on the AlexNet: its groups are k=2's
            if "cannot apply" not in str(exc):
                raise
            print(f"skipped {name}: {exc}")
            continue
        step = train.make_train_step(model, rule, opt, mesh=mesh)

        def run(n, step=step, box=[state]):  # noqa: B006 (per-rule mutable state box)
            for _ in range(n):
                box[0], m = step(box[0], batch)
            jax.block_until_ready((box[0], m))

        run(2)  # compile + warm-up
        runners[name] = run
    times = {k: [] for k in runners}
    for _ in range(_REPEATS.value):
        for name, run in runners.items():
            t = time.perf_counter()
            run(_STEPS.value)
            times[name].append((time.perf_counter() - t) / _STEPS.value * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"model": _MODEL.value, "width": _WIDTH.value, "batch": _BATCH.value,
           "ms": {k: round(v, 2) for k, v in med.items()},
           "ratio_to_bp": {k: round(v / med["bp"], 3) for k, v in med.items()}
           if "bp" in med else {}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    from experiments import _cli
    _cli.run(main)
