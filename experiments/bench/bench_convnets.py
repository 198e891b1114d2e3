"""Benchmark: the papers' conv nets at realistic widths, alearn against PyTorch and BioTorch.

ResNet-18 (CIFAR stem) and the ASAP AlexNet (5x5 kernels), both at ``--width`` (default
0.25: ResNet-18 16-128 channels, AlexNet 16c-32c-64c-FC256-FC256), 32x32x3 inputs, batch
128, SGD lr 0.01 momentum 0.9, softmax cross-entropy, one synthetic batch placed once:

- alearn: ``alearn.models.create(<model>, 10, width_multiplier=w)`` through the real trainer
  step (``make_train_step`` with the rule's step hook) for ``--rules`` (default
  bp, fa, dfa, kp, asap); convolution form ``auto`` (autotuned per shape on CPU) unless
  ``ALEARN_CONV_IMPL`` says otherwise;
- PyTorch: the same nets in ``torch.nn`` (``_torch_peers``) with ``torch.optim.SGD``, and
  BioTorch's FA and DFA (``BioModule(mode=...)``) of them.

One process, ``--rounds`` interleaved rounds (each case once per round, same order),
``--steps`` steps per case and round after a warm-up; figures are medians over rounds of
same-round ratios (a ratio > 1 means alearn is faster). The machine must be otherwise
idle: the script prints the foreign CPU load (other processes' share of the CPUs it may run
on during each round, from /proc/stat: ``alearn._cpu_load``) beside each round.

The last line reads exactly
``resnet18_bp_vs_pytorch=<r> alexnet_bp_vs_pytorch=<r> resnet18_dfa_vs_biotorch=<r>``;
the line before it holds every other ratio (FA/DFA against BioTorch, KP/ASAP against
alearn BP, per model).

Usage:
  python -m experiments.bench.bench_convnets [--rounds=5 --steps=10 --models=resnet18,alexnet]
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time

import jax
import optax
from absl import app, flags

import alearn
from alearn import train
from alearn._cpu_load import CpuLoad
from experiments.bench import _torch_peers
from experiments.bench._bench_models import (conv_impl, make_step, synthetic_batch,
                                             trainer_step)

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per case and round.")
_WIDTH = flags.DEFINE_float("width", 0.25, "Width multiplier of both nets.")
_MODELS = flags.DEFINE_list("models", ["resnet18", "alexnet"], "resnet18 and/or alexnet.")
_RULES = flags.DEFINE_list("rules", ["bp", "fa", "dfa", "kp", "asap"], "alearn rules.")
_PEERS = flags.DEFINE_list("peers", ["bp", "fa", "dfa"], "PyTorch (bp) / BioTorch modes.")
_SHAPE = (32, 32, 3)
_BATCH = 128


def alearn_case(model_name: str, rule_name: str, width: float):
    """``run(n)``: n trainer steps of ``model_name`` under ``rule_name`` on one batch."""
    model = alearn.models.create(model_name, 10, width_multiplier=width)
    rule = alearn.rules.create(rule_name)
    opt = train.create_rule_optimizer(rule, optax.sgd(0.01, momentum=0.9))
    step, state, placed, mesh = trainer_step(model, rule, opt, shape=_SHAPE, batch=_BATCH)
    box = {"state": state}

    def run(n):
        s = box["state"]
        for _ in range(n):
            s, m = step(s, placed)
        jax.block_until_ready((s, m))
        box["state"] = s

    def flops():
        """XLA's flop count of the same step traced with XLA's own convolutions (the
        autotuned step's oneDNN custom calls are invisible to XLA's cost analysis)."""
        with conv_impl("xla"):  # traced (not compiled or run) with XLA's convolutions
            lowered = make_step(model, rule, opt, mesh).lower(box["state"], placed)
        return float(lowered.cost_analysis()["flops"])

    run.flops = flops
    return run


def main(argv):
    del argv
    images, labels = synthetic_batch(_SHAPE, _BATCH)
    cases = {}
    for m in _MODELS.value:
        for r in _RULES.value:
            cases[f"{m}_{r}"] = alearn_case(m, r, _WIDTH.value)
        for r in _PEERS.value:
            run = _torch_peers.step_case(m, _WIDTH.value, r, images, labels)
            if run is None:
                print(f"skipped {m}_torch_{r}: torch{'' if r == 'bp' else '/biotorch'} "
                      "not installed", flush=True)
            else:
                cases[f"{m}_torch_{r}"] = run
    for run in cases.values():  # compile (and autotune) + warm up
        run(2)
    flops = {k: run.flops() for k, run in cases.items() if hasattr(run, "flops")}
    rows = []
    load = CpuLoad()
    for rnd in range(_ROUNDS.value):
        t = {}
        load.start()
        for name, run in cases.items():
            t0 = time.perf_counter()
            run(_STEPS.value)
            t[name] = (time.perf_counter() - t0) / _STEPS.value
        foreign = load.foreign()  # None: unknown (no /proc, no load average)
        row = {"round": rnd + 1, "foreign_cpu": math.nan if foreign is None else round(foreign, 3),
               **{f"{k}_ms": round(v * 1e3, 2) for k, v in t.items()},
               **{f"{k}_gflops": round(flops[k] / t[k] / 1e9, 1) for k in flops},
               **_torch_peers.ratios(t, _MODELS.value, _RULES.value)}
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)
    keys = sorted({k for row in rows for k in row if "_vs_" in k})
    med = {k: statistics.median(row[k] for row in rows if k in row) for k in keys}
    print(json.dumps({"medians": {k: round(v, 4) for k, v in med.items()},
                      "step_ms_medians": {k: round(statistics.median(r[f"{k}_ms"] for r in rows), 2)
                                          for k in cases},
                      "foreign_cpu_max": max(r["foreign_cpu"] for r in rows),
                      "width": _WIDTH.value, "cpus": os.cpu_count(),
                      "conv_impl": os.environ.get("ALEARN_CONV_IMPL", "auto"),
                      "malloc": alearn._malloc.STATUS}), flush=True)
    last = ("resnet18_bp_vs_pytorch", "alexnet_bp_vs_pytorch", "resnet18_dfa_vs_biotorch")
    print(" ".join(f"{k}={f'{med[k]:.3f}' if k in med and not math.isnan(med[k]) else 'nan'}"
                   for k in last))


if __name__ == "__main__":
    app.run(main)
