"""Benchmark: alearn against plain PyTorch on CPU, the MLP against the sgemm roofline, the
cost of WM and KP against BP, and the cost of feeding fresh host batches.

One process, interleaved rounds (every case once per round, in the same order), same shapes,
batch 128, SGD momentum 0.9, softmax cross-entropy:

- LeNet-5 (BioTorch's: conv5x5x6-pool-conv5x5x16-pool-FC120-FC84-FC10, 28x28x1, plain
  ``flax.linen`` through ``alearn.wrap``): alearn's trainer step with BP (convolution form
  ``auto``, i.e. per-shape autotuned on CPU, and ``xla`` for reference, forced by
  ``ALEARN_CONV_IMPL`` while the case is traced: ``_bench_models.conv_impl``) vs
  ``torch.nn`` with ``torch.optim.SGD``; ``lenet_pool_gain`` (medians line) is the step with
  ``flax.linen.max_pool`` over the step with ``alearn.nn.max_pool`` (both with XLA's
  convolutions);
- MLP 784-1024-1024-10: alearn BP vs PyTorch, and alearn BP's achieved FLOP/s (XLA's own
  flop count of the compiled step / step time) over the sgemm rate of a 2048² x 2048²
  float32 product measured in the same round, the faster of XLA's two CPU matrix-product
  paths (YNNPACK, its default, and Eigen) (``mlp_bp_roofline_frac``);
  ``mlp_step_options_gain`` (medians line) is the MLP step compiled with XLA's default
  options over the trainer's (``alearn.train.step.CPU_STEP_OPTIONS``);
  ``mlp_step_vs_gemms`` is the step over a program doing only its matrix products
  (:func:`mlp_gemms_case`) and ``mlp_gemms_roofline_frac`` that program's own fraction of
  the sgemm roofline: the ceiling XLA:CPU's products of these shapes (batch 128) set;
- WM (default mirror schedule) step time / BP step time, MLP, through the trainer
  (``make_train_step`` with the rule's step hook, ``create_rule_optimizer``);
- KP step time / BP step time, MLP, both with the trainer's optimizer
  (``optimizer_from_config``: SGD momentum 0.9, weight decay 5e-4 on the params, KP's
  λ = 5e-4 on B, so KP runs in its fused one-pass form, ``alearn/train/kp_sgd.py``);
  ``kp_separate_vs_bp`` (in the medians line) is the separate form (``kp_fused=False``);
- ``host_batch_overhead``: BP MLP steps fed fresh numpy batches through the trainer's input
  path (:func:`alearn.train.prefetch_to_device`) / steps on one pre-placed batch.

Each case runs ``--steps`` steps per round after a warm-up; the figures are medians over
rounds of same-round ratios. PyTorch is the optional extra ``bench``
(``pip install -e ".[bench]"``); without it the PyTorch cases are skipped (reported as nan).
The last line reads exactly
``lenet_bp_vs_pytorch=<r> mlp_bp_roofline_frac=<f> wm_vs_bp=<r> kp_vs_bp=<r> host_batch_overhead=<r>``
(``lenet_bp_vs_pytorch`` = alearn samples/s / PyTorch samples/s).

Usage:
  python -m experiments.bench.bench_peers [--rounds=5 --steps=30]
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import alearn
from alearn import train
from experiments.bench._bench_models import LeNet5, conv_impl, synthetic_batch, trainer_step

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per case and round.")
_BATCH = 128


#: The trainer's optimizer for the KP comparison (``optimizer_from_config``): the papers'
#: SGD with weight decay 5e-4 on the params; KP's λ = 5e-4 on B (W and B decay alike).
KP_CONFIG = {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
             "weight_decay_mask": "params", "epochs": 1}


def alearn_case(model, rule_name: str, *, fresh_batches: int = 0, config: dict | None = None,
                kp_fused: bool = True, compiler_options: dict | None = None,
                conv: str | None = None):
    """``run(n)`` doing n trainer steps; with ``fresh_batches`` > 0, host batches cycle
    through the trainer's prefetching input path instead of one pre-placed batch. With
    ``config`` the optimizer is the trainer's (``optimizer_from_config``), else plain SGD
    momentum 0.9 without weight decay. ``conv``: the convolution form the step is traced
    with (``xla``, ``im2col``, ``banded``; default: ``ALEARN_CONV_IMPL`` or ``auto``); the
    step is traced (and run twice) here, inside :func:`conv_impl`."""
    rule = alearn.rules.create(rule_name)
    opt = (train.optimizer_from_config(config, rule, 1, kp_fused=kp_fused) if config is not None
           else train.create_rule_optimizer(rule, optax.sgd(0.01, momentum=0.9)))
    with conv_impl(conv):
        step, state, placed, mesh = trainer_step(model, rule, opt,
                                                 compiler_options=compiler_options)
        for _ in range(2):  # traced and compiled now, with this convolution form
            state, _ = step(state, placed)
        jax.block_until_ready(state)
    host = [dict(zip(("image", "label"), synthetic_batch(seed=1 + i)))
            for i in range(max(fresh_batches, 1))]
    box = {"state": state}

    def run(n):
        s = box["state"]
        batches = (train.prefetch_to_device(itertools.islice(itertools.cycle(host), n), mesh)
                   if fresh_batches else itertools.repeat(placed, n))
        for b in batches:
            s, m = step(s, b)
        jax.block_until_ready((s, m))
        box["state"] = s

    run.flops = lambda: float(step.lower(box["state"], placed).compile().cost_analysis()["flops"])
    return run


def torch_case(kind: str):
    """``run(n)`` doing n PyTorch SGD steps of the same model on one batch, or None."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    nn = torch.nn
    if kind == "lenet":
        net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120),
                            nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    else:
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024),
                            nn.ReLU(), nn.Linear(1024, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = synthetic_batch()
    tx, ty = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y).long()
    loss_fn = nn.CrossEntropyLoss()

    def run(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(tx), ty)
            loss.backward()
            opt.step()
        float(loss.detach())

    return run


#: XLA:CPU runs a matrix product either through YNNPACK (its default for most dots) or
#: through Eigen; on some machines Eigen's large sgemm is the faster, so the roofline is
#: the faster of the two in each round.
EIGEN_DOTS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def sgemm_case(n: int = 2048, compiler_options: dict | None = None):
    """``run(k)``: k jitted float32 n x n x n products; ``run.flops`` per product."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    f = jax.jit(lambda a: a @ a, compiler_options=compiler_options)

    def run(k):
        for _ in range(k):
            out = f(a)
        out.block_until_ready()

    run.flops = lambda: 2.0 * n ** 3
    return run


def mlp_gemms_case(widths=(784, 1024, 1024, 10)):
    """``run(k)``: k jitted programs doing only the matrix products of one MLP BP step.

    The forward products h_l W_l, the input cotangents g_l W_lᵀ (not for the first layer)
    and the weight cotangents h_lᵀ g_l, on the step's shapes (batch 128), chained as in the
    step; no bias, activation, loss or optimizer work. Its time is what XLA:CPU's matrix
    products alone need, so ``mlp_step_vs_gemms`` = step time / this time shows how much of
    the step is not matrix product. ``run.flops``: XLA's flop count of the program.
    """
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.normal(size=(a, b)) * 0.01, jnp.float32)
          for a, b in zip(widths[:-1], widths[1:])]
    x = jnp.asarray(rng.normal(size=(_BATCH, widths[0])), jnp.float32)

    def products(x, ws):
        hs = [x]
        for w in ws:
            hs.append(hs[-1] @ w)
        g, grads = hs[-1], []
        for layer in range(len(ws) - 1, -1, -1):
            grads.append(hs[layer].T @ g)
            if layer:
                g = g @ ws[layer].T
        return grads

    f = jax.jit(products)

    def run(k):
        for _ in range(k):
            out = f(x, ws)
        jax.block_until_ready(out)

    run.flops = lambda: float(f.lower(x, ws).compile().cost_analysis()["flops"])
    return run


def main(argv):
    del argv
    mlp = alearn.models.create("mlp", 10, widths=(1024, 1024))
    cases = {
        "lenet_alearn": alearn_case(alearn.wrap(LeNet5()), "bp"),
        "lenet_alearn_xla": alearn_case(alearn.wrap(LeNet5()), "bp", conv="xla"),
        "lenet_alearn_xla_flaxpool": alearn_case(alearn.wrap(LeNet5(pool="flax")), "bp",
                                                 conv="xla"),
        "lenet_torch": torch_case("lenet"),
        "mlp_bp": alearn_case(mlp, "bp"),
        "mlp_bp_xla_defaults": alearn_case(mlp, "bp", compiler_options={}),
        "mlp_torch": torch_case("mlp"),
        "mlp_wm": alearn_case(mlp, "wm"),
        "mlp_bp_wd": alearn_case(mlp, "bp", config=KP_CONFIG),
        "mlp_kp": alearn_case(mlp, "kp", config=KP_CONFIG),
        "mlp_kp_separate": alearn_case(mlp, "kp", config=KP_CONFIG, kp_fused=False),
        "mlp_bp_host": alearn_case(mlp, "bp", fresh_batches=8),
        "sgemm": sgemm_case(),
        "sgemm_eigen": sgemm_case(compiler_options=EIGEN_DOTS),
        "mlp_gemms": mlp_gemms_case(),
    }
    cases = {k: v for k, v in cases.items() if v is not None}
    for run in cases.values():  # compile (and autotune) + warm up
        run(3)
    mlp_flops, sgemm_flops = cases["mlp_bp"].flops(), cases["sgemm"].flops()
    gemm_flops = cases["mlp_gemms"].flops()
    rows = []
    for r in range(_ROUNDS.value):
        t = {}
        for name, run in cases.items():
            k = 5 if name.startswith("sgemm") else _STEPS.value
            t0 = time.perf_counter()
            run(k)
            t[name] = (time.perf_counter() - t0) / k
        nan = float("nan")
        sgemm_t = min(t["sgemm"], t["sgemm_eigen"])
        row = {
            "round": r + 1,
            **{f"{k}_ms": round(v * 1e3, 3) for k, v in t.items()},
            "lenet_bp_vs_pytorch": t["lenet_torch"] / t["lenet_alearn"] if "lenet_torch" in t else nan,
            "lenet_auto_vs_xla": t["lenet_alearn_xla"] / t["lenet_alearn"],
            "lenet_pool_gain": t["lenet_alearn_xla_flaxpool"] / t["lenet_alearn_xla"],
            "mlp_bp_vs_pytorch": t["mlp_torch"] / t["mlp_bp"] if "mlp_torch" in t else nan,
            "sgemm_gflops": sgemm_flops / sgemm_t / 1e9,
            "sgemm_ynn_vs_eigen": t["sgemm_eigen"] / t["sgemm"],
            "mlp_bp_gflops": mlp_flops / t["mlp_bp"] / 1e9,
            "mlp_bp_roofline_frac": (mlp_flops / t["mlp_bp"]) / (sgemm_flops / sgemm_t),
            "mlp_step_options_gain": t["mlp_bp_xla_defaults"] / t["mlp_bp"],
            "mlp_step_vs_gemms": t["mlp_bp"] / t["mlp_gemms"],
            "mlp_gemms_roofline_frac": (gemm_flops / t["mlp_gemms"]) / (sgemm_flops / sgemm_t),
            "wm_vs_bp": t["mlp_wm"] / t["mlp_bp"],
            "kp_vs_bp": t["mlp_kp"] / t["mlp_bp_wd"],
            "kp_separate_vs_bp": t["mlp_kp_separate"] / t["mlp_bp_wd"],
            "host_batch_overhead": t["mlp_bp_host"] / t["mlp_bp"],
        }
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)
    keys = ("lenet_bp_vs_pytorch", "mlp_bp_roofline_frac", "wm_vs_bp", "kp_vs_bp",
            "host_batch_overhead")
    med = {k: statistics.median(row[k] for row in rows) for k in keys}
    extra = {k: round(statistics.median(row[k] for row in rows), 4)
             for k in ("lenet_auto_vs_xla", "lenet_pool_gain", "mlp_bp_vs_pytorch", "sgemm_gflops",
                       "sgemm_ynn_vs_eigen", "mlp_bp_gflops", "mlp_step_options_gain",
                       "mlp_step_vs_gemms", "mlp_gemms_roofline_frac",
                       "kp_separate_vs_bp")}
    print(json.dumps({"medians": extra, "devices": f"{jax.local_device_count()} x "
                      f"{jax.devices()[0].platform}", "cpus": os.cpu_count()}), flush=True)
    print(" ".join(f"{k}={'nan' if math.isnan(v) else f'{v:.3f}'}" for k, v in med.items()))


if __name__ == "__main__":
    app.run(main)
