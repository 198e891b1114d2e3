r"""Every rule on the Flax-style zoo models through ``alearn.wrap`` (issue 29's table).

For each model of ``tests/_flax_zoo.py`` (ResNet, lm1b-style Transformer LM, big_vision
ViT with nn.scan + nn.remat, SST-2 LSTM, MLP-Mixer) and each rule: does it run, the loss
after ``--steps`` Adam steps on the model's fixed sample batch (vs BP's), the jitted
step's median time as a ratio to BP's step on the same model in the same round, and the
feedback memory relative to the parameter count. Run it on a quiet machine (the step
times are same-round ratios, but another job on the 2 cores still distorts them)::

    python -m experiments.bench.bench_wrap_zoo --steps=100 --time_steps=20

Writes a markdown table to stdout and ``--out`` (JSON).
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

import alearn
from tests import _flax_zoo as zoo
from tests.test_wrap_cover import WRAP

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 100, "training steps on the fixed batch")
flags.DEFINE_integer("time_steps", 20, "timed steps (median) after warm-up")
flags.DEFINE_list("models", list(zoo.ALL_LINEN), "zoo models")
flags.DEFINE_list("rules", ["bp", "fa", "dfa", "kp", "sign", "wm", "asap"], "rules")
flags.DEFINE_integer("batch", 32, "the zoo's sample batch tiled to this many rows")
flags.DEFINE_string("out", "", "JSON file for the rows")


def _loss(out, y):
    out = out[0] if isinstance(out, tuple) else out
    return alearn.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _rule(name):
    return alearn.rules.create(name, **({"grouping": "block_input"} if name == "asap" else {}))


def _tile(a, n: int):
    reps = -(-n // a.shape[0])
    return jnp.concatenate([a] * reps)[:n]


def _run(name: str, rule_name: str, start: dict) -> dict:
    """``start``: the forward parameters every rule of this model starts from (BP's init:
    under nn.scan, Flax's lifted init draws other values when the body also creates
    feedback, so a rule's own init would start elsewhere)."""
    model, inputs, y = zoo.make(name)
    inputs, y = tuple(_tile(a, FLAGS.batch) for a in inputs), _tile(y, FLAGS.batch)
    wrapped, rule = alearn.wrap(model, **WRAP[name]), _rule(rule_name)
    try:
        v = wrapped.init(jax.random.key(0), *inputs, rule=rule)
    except ValueError as exc:  # a rule the model cannot take says why
        return {"model": name, "rule": rule_name, "runs": False, "why": str(exc)[:160]}
    v = {**v, **(start or {})}
    params = alearn.trainable(rule, v)
    fixed = {k: a for k, a in v.get("feedback", {}).items()} if "feedback" not in params else {}
    state = {k: a for k, a in v.items() if k not in params and k != "feedback"}
    tx = optax.chain(rule.transform(), optax.adam(1e-3))

    @jax.jit
    def step(params, fixed, state, opt, key):
        variables = {**state, **params, **({"feedback": fixed} if fixed else {})}
        (loss, _, new_state), upd = alearn.value_and_updates(
            _loss, wrapped, rule, variables, *inputs, targets=y, train=True)
        steps, opt = tx.update(upd, opt, params)
        params = optax.apply_updates(params, steps)
        if rule_name == "wm":  # the mirror phase (the trainer runs it every 10th step)
            fixed = rule.mirror(params["params"], fixed, key)
        return params, fixed, {**state, **new_state}, opt, loss

    opt = tx.init(params)
    losses = []
    for i in range(FLAGS.steps):
        params, fixed, state, opt, loss = step(params, fixed, state, opt, jax.random.key(i))
        losses.append(float(loss))
    times = []
    for i in range(FLAGS.time_steps):
        t0 = time.perf_counter()
        out = step(params, fixed, state, opt, jax.random.key(i))
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    n_params = sum(a.size for a in jax.tree.leaves(v["params"]))
    n_fb = sum(a.size for a in jax.tree.leaves(v.get("feedback", {})))
    return {"model": name, "rule": rule_name, "runs": True, "loss0": losses[0],
            "loss": losses[-1], "step_ms": 1e3 * statistics.median(times),
            "feedback_per_param": n_fb / n_params}


def main(argv):
    del argv
    rows = []
    print("| model | rule | runs | loss 0 → after | BP's loss after | step / BP step | "
          "feedback / params |")
    print("|---|---|---|---|---|---|---|")
    for name in FLAGS.models:
        base = None
        model, inputs, _ = zoo.make(name)
        inputs = tuple(_tile(a, FLAGS.batch) for a in inputs)
        start = {k: a for k, a in alearn.wrap(model, **WRAP[name]).init(
            jax.random.key(0), *inputs, rule=alearn.rules.create("bp")).items()}
        for rule_name in FLAGS.rules:
            r = _run(name, rule_name, start)
            rows.append(r)
            if rule_name == "bp":
                base = r
            if not r["runs"]:
                print(f"| {name} | {rule_name} | raises: {r['why']} | | | | |")
                continue
            ratio = r["step_ms"] / base["step_ms"] if base else float("nan")
            print(f"| {name} | {rule_name} | yes | {r['loss0']:.3f} → {r['loss']:.3f} | "
                  f"{base['loss'] if base else float('nan'):.3f} | {ratio:.2f} "
                  f"({r['step_ms']:.1f} ms) | {r['feedback_per_param']:.2f} |", flush=True)
    if FLAGS.out:
        with open(FLAGS.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    app.run(main)
