"""Throughput of the AL device pipeline vs sequential AL, measured and modelled.

One run, per model (default al_mlp then al_cnn, CPU widths ×0.25 as in
``experiments/configs/al.py:<model>,mnist5k,cpu``, micro-batch 32), train samples/s of:

- ``seq``: sequential AL exactly as the trainer runs it (``alearn.al.train.train_epoch``
  over ``SequentialStep``: one jitted whole-network step, donated states placed with the
  step's own output sharding, host batches prefetched by a thread, every step's metrics
  read one step late and checked); the pipeline's gains below are against this baseline
  (issue 27: the trainer used to be ~2x slower than its one-stage pipeline);
- ``mpmd1_trainer``: the trainer's 1-stage pipeline (``PipelinedStep``, one call per
  micro-batch through the same ``train_epoch``): what ``--config.pipeline_stages=1`` runs;
- ``mpmd1`` / ``spmd1``: the pipeline with 1 stage (MPMD and SPMD engines);
- ``mpmd2`` / ``spmd2``: the pipeline with N = 2 stages on 2 forced CPU devices (MPMD's
  CPU default: each stage's XLA program on one thread, ``xla_cpu_multi_thread_eigen=
  False``; more blocks than stages are grouped by the flops-balanced plan,
  ``blocks_per_stage="flops"``);
- ``mpmd2_pool``: MPMD, 2 stages sharing XLA's multi-threaded intra-op pool;

each the best of ``--reps`` timed epochs of ``--micro_batches`` micro-batches (al_cnn:
``--cnn_micro_batches``, its steps are ~10x dearer; host numpy
inputs, drained and waited for), after one untimed warm-up epoch. Then the profile: every
block's step alone on one device (wall ms and XLA flops), the per-micro-batch overhead of
the 1-stage pipeline over the sum of its block steps, the measured 2-stage tick vs the
slowest stage, and the balanced 4-stage plan with its MODELLED speedup
``n·Σc / ((n + N − 1)·max_k c_k)`` (hand-over and dispatch not modelled; al_mlp has 2
blocks, so its "4-device" plan has 2 stages).

Last line (the first model): ``stage1_vs_seq=<r> stage2_vs_seq=<r> modelled4_vs_seq=<r>
seq_vs_stage1_trainer=<r>`` where stage1/stage2 are the pipeline's default engine
(``mode="auto"`` = MPMD here) and the last is ``seq / mpmd1_trainer``, both through the
trainer's epoch loop (issue 27 asks >= 0.95).

Usage (about 1–2 min on an idle 2-core machine):
  python -m experiments.bench.bench_pipeline [--models=mlp,cnn --micro_batches=64
      --cnn_micro_batches=16 --reps=3 --modes=mpmd,spmd
      --width_multiplier=0.25 --batch_size=32]
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=2").strip()

import functools  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import alearn.al as al  # noqa: E402
from alearn.al import schedule  # noqa: E402
from alearn.al.models import ALSpec, network  # noqa: E402
from alearn.al.pipeline import StagePlan, balance_blocks, feed, for_network  # noqa: E402
from alearn.al.pipeline.al import PipelinedStep, one_hot  # noqa: E402
from alearn.al.train import SequentialStep, train_epoch  # noqa: E402

_MODELS = flags.DEFINE_list("models", ["mlp", "cnn"],
                            "AL models: mlp, cnn (al_<name>) and mlp4 (al_mlp's widths as 4 "
                            "blocks of Dense, a 4-stage MLP).")
_N = flags.DEFINE_integer("micro_batches", 64, "Micro-batches per timed epoch n (MLPs).")
_N_CNN = flags.DEFINE_integer("cnn_micro_batches", 16, "Micro-batches per timed epoch, cnn.")
_BS = flags.DEFINE_integer("batch_size", 32, "Micro-batch size (thesis: 32).")
_WM = flags.DEFINE_float("width_multiplier", 0.25, "Width multiplier (0.25 = the cpu config).")
_REPS = flags.DEFINE_integer("reps", 3, "Timed epochs per variant (fastest kept).")
_MODES = flags.DEFINE_list("modes", ["mpmd", "spmd"], "Pipeline engines to time.")


def _network(name: str):
    if name == "mlp4":
        w = max(1, round(1024 * _WM.value))
        bridge = (("dense", 5 * w), ("dense", w))
        return network(ALSpec(((("dense", w),),) * 4, (bridge,) * 4, w), 10, (28, 28, 1))
    return al.create(f"al_{name}", 10, (28, 28, 1), width_multiplier=_WM.value)


def _best(epoch, reps: int) -> float:
    """Seconds of the fastest of ``reps`` calls of ``epoch`` after one warm-up call."""
    epoch()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    return min(times)


def _copy(tree):
    return jax.tree.map(np.array, tree)


def bench(name: str) -> dict:
    n, bs = (_N_CNN.value if name == "cnn" else _N.value), _BS.value
    net = _network(name)
    init = _copy(net.init(jax.random.key(0)))
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(n, bs, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, (n, bs)).astype(np.int32)
    out = {"model": name if name == "mlp4" else f"al_{name}", "blocks": len(net.blocks),
           "micro_batches": n, "batch": bs}

    batches = [{"image": xs[i], "label": labels[i]} for i in range(n)]
    seq = SequentialStep(net)
    box = {"st": seq.place(_copy(init))}

    def seq_epoch():  # the trainer's epoch loop (alearn.al.train), one compile in the warm-up
        box["st"], _ = train_epoch(seq, box["st"], batches)
    t_seq = _best(seq_epoch, _REPS.value)
    out["samples_per_s"] = {"seq": n * bs / t_seq}
    logging.info("%s seq: %.0f samples/s", name, out["samples_per_s"]["seq"])
    if "mpmd" in _MODES.value:
        one = PipelinedStep(net, _copy(init), ml_collections.ConfigDict(
            {"pipeline_stages": 1, "batch_size": bs, "pipeline_mode": "mpmd"}))
        t_one = _best(lambda: train_epoch(one, None, batches), _REPS.value)
        out["samples_per_s"]["mpmd1_trainer"] = n * bs / t_one

    variants = [(mode, stages, None, f"{mode}{stages}") for mode in _MODES.value
                for stages in (1, 2)]
    if "mpmd" in _MODES.value:  # stages sharing XLA's multi-threaded intra-op pool
        variants.insert(2, ("mpmd", 2, {"xla_cpu_multi_thread_eigen": True}, "mpmd2_pool"))
    for mode, stages, opts, key in variants:
        if stages <= len(net.blocks):
            # More blocks than stages: the flops-balanced plan (Pipeline.plan).
            bps = "flops" if len(net.blocks) > stages > 1 else None
            pl = for_network(net, _copy(init), bs, stages=stages, mode=mode,
                             compiler_options=opts, blocks_per_stage=bps)
            if pl.plan is not None and key == "mpmd2":
                print(pl.plan.report([bd.name for bd in net.blocks]))
                out["plan2_by_flops"] = pl.plan.blocks_per_stage

            def pipe_epoch(pl=pl):
                feed(pl, net, xs, labels)
                pl.flush()
                pl.wait()
            out["samples_per_s"][key] = n * bs / _best(pipe_epoch, _REPS.value)
            logging.info("%s %s: %.0f samples/s", name, key, out["samples_per_s"][key])

    # Profile: each block's step alone on one device.
    s, y, costs = xs[0], one_hot(net, labels[0]), []
    for bd, st in zip(net.blocks, init):
        costs.append(schedule.measure(functools.partial(al.block_step, bd), st, s, y,
                                      reps=max(5, _REPS.value)))
        _, s, y, _ = jax.jit(functools.partial(al.block_step, bd))(st, s, y)
    block_ms = [c.seconds * 1e3 for c in costs]
    out["block_ms"] = [round(v, 3) for v in block_ms]
    out["block_mflop"] = [round(c.flops / 1e6, 2) for c in costs]
    stages = min(4, len(net.blocks))
    plans = {by: StagePlan(by, tuple(v), balance_blocks(v, stages)) for by, v in
             (("time", [c.seconds for c in costs]), ("flops", [c.flops for c in costs]))}
    names = [bd.name for bd in net.blocks]
    for p in plans.values():
        print(p.report(names))
    t_plan = plans["time"]
    out["plan4_blocks_per_stage"] = t_plan.blocks_per_stage
    out["modelled4_vs_seq"] = (n * sum(t_plan.block_costs)
                               / ((n + stages - 1) * max(t_plan.stage_costs)))
    out["modelled4_vs_seq_by_flops"] = plans["flops"].modelled_speedup * n / (n + stages - 1)
    sps = out["samples_per_s"]
    ms = {k: 1e3 * bs / v for k, v in sps.items()}  # ms per micro-batch
    two = out.get("plan2_by_flops", (1,) * len(net.blocks))
    two_cost = max(StagePlan("time", tuple(block_ms), two).stage_costs)
    print(f"== {out['model']} ({len(net.blocks)} blocks, width x{_WM.value}, batch {bs}, "
          f"n={n}) samples/s: " + ", ".join(f"{k} {v:.0f}" for k, v in sps.items()))
    print(f"  profile: blocks alone {', '.join(f'{v:.3f}' for v in block_ms)} ms "
          f"(sum {sum(block_ms):.3f}); seq step {ms['seq']:.3f} ms/micro-batch")
    for k, v in ms.items():
        if k.endswith(("1", "1_trainer")):
            print(f"  {k}: {v:.3f} ms/micro-batch = blocks' sum + {v - sum(block_ms):.3f} ms "
                  f"overhead (dispatch, hand-over, host input)")
        elif k[-1] == "2" or k.endswith("pool"):
            print(f"  {k}: {v:.3f} ms/tick vs slowest of 2 stages {two_cost:.3f} ms "
                  f"(stages {two}): {v / two_cost:.2f}x the ideal tick")
    return out


def main(argv):
    del argv
    print(f"devices: {jax.devices()}")
    results = []
    for name in _MODELS.value:
        if name not in ("mlp", "mlp4", "cnn"):
            raise app.UsageError(f"unknown model {name!r}; choose from mlp, mlp4, cnn")
        results.append(bench(name))
        print(results[-1])
    r = results[0]
    sps = r["samples_per_s"]
    auto = "mpmd" if "mpmd1" in sps else _MODES.value[0]
    print(f"stage1_vs_seq={sps[f'{auto}1'] / sps['seq']:.3f} "
          f"stage2_vs_seq={sps.get(f'{auto}2', float('nan')) / sps['seq']:.3f} "
          f"modelled4_vs_seq={r['modelled4_vs_seq']:.3f} "
          f"seq_vs_stage1_trainer={sps['seq'] / sps.get('mpmd1_trainer', float('nan')):.3f}")


if __name__ == "__main__":
    from experiments import _cli
    _cli.run(main)
