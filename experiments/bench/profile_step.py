"""Where a trainer step's time goes: XLA's per-op times from a ``jax.profiler`` trace.

Builds the real trainer step (``make_train_step`` with the rule's hook, SGD momentum 0.9,
batch 128, one synthetic batch placed once) for a benchmark model, runs ``--steps`` steps
under ``jax.profiler``, and prints, per compiled HLO op (fusion, matrix product, copy, ...),
the durations of the trace events named after it, summed and divided by the steps, its
share of that total, its output shape and the JAX operation it comes from (the HLO op's
``op_name`` metadata). Read the times as a ranking, not a partition of the step: an op that
XLA splits over its threads appears once per thread (YNNPACK fusions, parallel loops),
while one that a library runs on its own pool (Eigen's matrix products and convolutions)
appears once, for its wall duration. The same numbers are written to ``--out`` as JSON.
This is the profile behind the LeNet figures in docs/notes/perf.md.

Usage:
  python -m experiments.bench.profile_step --model=lenet [--rule=bp --steps=20 --top=25]
  python -m experiments.bench.profile_step --model=resnet18 --width=0.25 --steps=10
"""

from __future__ import annotations

import glob
import json
import os
import tempfile

import jax
import optax
from absl import app, flags

import alearn
from alearn import train
from experiments.bench._bench_models import LeNet5, trainer_step
from experiments.bench._profile import hlo_ops, per_op_times

MODELS = ("lenet", "mlp", "resnet18", "alexnet")
_MODEL = flags.DEFINE_enum("model", "lenet", MODELS, "Benchmark model.")
_RULE = flags.DEFINE_string("rule", "bp", "Learning rule.")
_STEPS = flags.DEFINE_integer("steps", 20, "Traced steps.")
_TOP = flags.DEFINE_integer("top", 25, "Ops to print.")
_OUT = flags.DEFINE_string("out", "", "Optional JSON output path.")
_WIDTH = flags.DEFINE_float("width", 0.25, "Width multiplier of resnet18 / alexnet (32x32x3).")


def _step(model_name: str, rule_name: str):
    shape = (28, 28, 1)
    if model_name == "lenet":
        model = alearn.wrap(LeNet5())
    elif model_name == "mlp":
        model = alearn.models.create("mlp", 10, widths=(1024, 1024))
    else:  # the conv-net benchmark's nets (bench_convnets), CIFAR-shaped
        model = alearn.models.create(model_name, 10, width_multiplier=_WIDTH.value)
        shape = (32, 32, 3)
    rule = alearn.rules.create(rule_name)
    step, state, batch, _ = trainer_step(
        model, rule, train.create_rule_optimizer(rule, optax.sgd(0.01, momentum=0.9)),
        shape=shape)
    return step, state, batch


def main(argv):
    del argv
    step, state, batch = _step(_MODEL.value, _RULE.value)
    ops = hlo_ops(step.lower(state, batch).compile().as_text())
    for _ in range(5):  # compile and warm up
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(_STEPS.value):
            state, _ = step(state, batch)
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        (path,) = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        data = jax.profiler.ProfileData.from_file(path)
        events = [(ev.name, ev.duration_ns) for plane in data.planes
                  for line in plane.lines for ev in line.events]
    rows = per_op_times(events, ops, _STEPS.value)
    total_us = sum(r["us_per_step"] for r in rows)
    print(f"{_MODEL.value} {_RULE.value}: {total_us:.0f} us of XLA op time per step "
          f"(trace events summed), {len(rows)} ops")
    for r in rows[:_TOP.value]:
        print(f"{r['us_per_step']:8.1f} us {100 * r['share']:5.1f} %  {r['op']:30s} "
              f"{r['shape'][:30]:30s} {r['source'][-70:]}")
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump({"model": _MODEL.value, "rule": _RULE.value, "steps": _STEPS.value,
                       "us_per_step": total_us, "ops": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
