"""XLA's own cost of the KP train step against BP's: flops and bytes accessed.

Load-independent evidence for issue 13's "KP ≤ 1.05× BP": the compiled trainer step
(``make_train_step``, optimizer from ``optimizer_from_config``: SGD lr 0.01, momentum 0.9,
weight decay 5e-4 on the params, KP's λ = 5e-4 on B) of the MLP 784-1024-1024-10 and
BioTorch's LeNet-5 (XLA convolutions: the autotuner's timed choice would vary
with load) at batch 128, for BP, KP in the separate form (B a leaf of the base
optimizer with its own momentum, ``kp_fused=False``) and KP fused
(:func:`alearn.train.kp_sgd.kp_sgd`). Prints one JSON line per (model, case) and the
ratios to BP.

Usage:
  python -m experiments.bench.kp_cost
"""

from __future__ import annotations

import json

import jax
from absl import app

import alearn
from alearn import train
from experiments.bench._bench_models import LeNet5, conv_impl, trainer_step

CONFIG = {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
          "weight_decay_mask": "params", "epochs": 1}
CASES = {"bp": ("bp", True), "kp_separate": ("kp", False), "kp_fused": ("kp", True)}


def step_cost(model, rule_name: str, kp_fused: bool, batch: int = 128,
              conv: str | None = None) -> dict:
    """flops, bytes accessed and optimizer-state size of one compiled trainer step
    (``conv``: the convolution form it is traced with, :func:`conv_impl`)."""
    rule = alearn.rules.create(rule_name)
    opt = train.optimizer_from_config(CONFIG, rule, steps_per_epoch=100, kp_fused=kp_fused)
    with conv_impl(conv):
        step, state, placed, _ = trainer_step(model, rule, opt, batch=batch)
        cost = step.lower(state, placed).compile().cost_analysis()
    leaves = jax.tree.leaves(state.opt_state)
    return {"flops": float(cost["flops"]), "bytes": float(cost["bytes accessed"]),
            "opt_state_floats": int(sum(a.size for a in leaves if a.ndim))}


def main(argv):
    del argv
    models = {"mlp": (alearn.models.create("mlp", 10, widths=(1024, 1024)), None),
              "lenet": (alearn.wrap(LeNet5()), "xla")}
    for mname, (model, conv) in models.items():
        costs = {case: step_cost(model, *spec, conv=conv) for case, spec in CASES.items()}
        for case, c in costs.items():
            bp = costs["bp"]
            print(json.dumps({"model": mname, "case": case, **c,
                              "flops_vs_bp": round(c["flops"] / bp["flops"], 4),
                              "bytes_vs_bp": round(c["bytes"] / bp["bytes"], 4)}), flush=True)


if __name__ == "__main__":
    app.run(main)
