"""Schedule report of the AL device pipeline: per-stage costs and MODELLED makespans.

For each model: the schedule of one epoch of n micro-batches on N stages (ticks n + N − 1,
utilisation n / (n + N − 1)); each block's step measured alone on one device (wall time,
fastest of --reps, and XLA ``cost_analysis`` flops), summed per stage; the BP twin's
step (softmax cross-entropy, Adam) measured the same way; and the modelled makespans of
sequential AL (n·Σc), the lock-step pipeline ((n+N−1)·max c) and BP (n·c_BP) — MODELLED:
communication and dispatch are not included (alearn/al/schedule.py).

Models: ``mlp`` = al_mlp (2 blocks, so at most 2 stages), ``mlp4`` = the same MLP widths
split into 4 blocks of Dense(1024) (the 4-stage MLP), ``cnn`` = al_cnn (4 blocks).

Usage:
  python -m experiments.bench_pipeline [--models=mlp,mlp4,cnn --stages=4
      --micro_batches=140 --batch_size=32 --width_multiplier=1.0 --reps=5]
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import alearn
import alearn.al as al
from alearn.al import schedule
from alearn.al._pipeline_mesh import group_blocks
from alearn.al.models import ALSpec, bp_baseline, network, spec
from alearn.rules.bp import BP

_MODELS = flags.DEFINE_list("models", ["mlp", "mlp4", "cnn"], "mlp, mlp4 and/or cnn.")
_STAGES = flags.DEFINE_integer("stages", 4, "Pipeline stages N (capped at the block count).")
_N = flags.DEFINE_list("micro_batches", ["140", "1875"],
                       "Micro-batches per epoch n (140 = mnist5k train / 32; 1875 = MNIST).")
_BS = flags.DEFINE_integer("batch_size", 32, "Micro-batch size (thesis: 32).")
_WM = flags.DEFINE_float("width_multiplier", 1.0, "Width multiplier (1.0 = thesis widths).")
_REPS = flags.DEFINE_integer("reps", 5, "Timed repetitions per step (fastest kept).")


def _spec(name: str) -> ALSpec:
    if name == "mlp4":
        w = max(1, round(1024 * _WM.value))
        bridge = (("dense", 5 * w), ("dense", w))
        return ALSpec(((("dense", w),),) * 4, (bridge,) * 4, w)
    return spec(f"al_{name}", width_multiplier=_WM.value)


def _bp_cost(sp: ALSpec, x, labels) -> schedule.StepCost:
    model = bp_baseline(sp, 10)
    variables = alearn.init(model, BP(), jax.random.key(0), x)
    tx = optax.adam(1e-4)

    def step(params, opt, x, labels):
        (_, _, _), upd = alearn.loss_and_updates(model, BP(), {"params": params}, x, labels)
        u, opt = tx.update(upd["params"], opt, params)
        return optax.apply_updates(params, u), opt

    params = variables["params"]
    return schedule.measure(step, params, tx.init(params), x, labels, reps=_REPS.value)


def bench(name: str) -> dict:
    sp = _spec(name)
    net = network(sp, 10, (28, 28, 1))
    states = net.init(jax.random.key(0), _BS.value)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(_BS.value, 28, 28, 1)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, _BS.value))
    s, y, costs = x, al.targets(net, labels), []
    for bd, st in zip(net.blocks, states):
        costs.append(schedule.measure(functools.partial(al.block_step, bd), st, s, y,
                                      reps=_REPS.value))
        _, s, y, _ = jax.jit(functools.partial(al.block_step, bd))(st, s, y)
    n_stages = min(_STAGES.value, len(net.blocks))
    groups = group_blocks([bd.name for bd in net.blocks], n_stages)
    per_stage = schedule.stage_costs(costs, groups)
    bp = _bp_cost(sp, x, labels)
    out = {"model": name, "blocks": len(net.blocks), "stages": n_stages,
           "block_ms": [round(c.seconds * 1e3, 3) for c in costs],
           "block_mflop": [round(c.flops / 1e6, 2) for c in costs],
           "bp_ms": round(bp.seconds * 1e3, 3), "bp_mflop": round(bp.flops / 1e6, 2),
           "reports": {}}
    for n in (int(v) for v in _N.value):
        sch = schedule.Schedule.ideal(n, n_stages)
        text = schedule.format_report(sch, per_stage, bp)
        out["reports"][n] = {
            "utilisation": round(sch.utilisation, 4),
            "modelled_by_time": schedule.modelled_makespan(
                [c.seconds for c in per_stage], n, bp.seconds),
            "modelled_by_flops": schedule.modelled_makespan(
                [c.flops for c in per_stage], n, bp.flops)}
        print(f"== {name}: {len(net.blocks)} blocks on {n_stages} stages, batch "
              f"{_BS.value}, width x{_WM.value}; BP twin {bp.seconds * 1e3:.3f} ms/step, "
              f"{bp.flops / 1e6:.2f} MFLOP\n{text}")
    return out


def main(argv):
    del argv
    print(f"devices: {jax.devices()}")
    for name in _MODELS.value:
        if name not in ("mlp", "mlp4", "cnn"):
            raise app.UsageError(f"unknown model {name!r}; choose from mlp, mlp4, cnn")
        print(json.dumps(bench(name)))


if __name__ == "__main__":
    from experiments import _cli
    _cli.run(main)
