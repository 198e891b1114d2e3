"""Benchmark: trainer-step throughput of MLP, LeNet-5 and ResNet-18 under bp/fa/dfa/kp/asap on
one accelerator, as samples/s and as a fraction of the chip's peak FLOP/s.

For each model x rule the real trainer step is timed: ``alearn.train.make_train_step`` with
the rule's own step hook (``setup.step_hook_for``), ``create_rule_optimizer(rule, SGD lr 0.01
momentum 0.9)``, on ONE device (``jax.local_devices()[0]``: the figure is per chip), with one
synthetic batch (normal images, uniform labels, seed 0) placed on the device once:

- ``mlp``: alearn's ``mlp`` 784-1024-1024-10 on 28x28x1 inputs;
- ``lenet``: LeNet-5 as BioTorch writes it (``experiments/bench/_bench_models.py``), 28x28x1;
- ``resnet18``: alearn's ``resnet18`` (CIFAR stem: conv3x3, no max-pool) on 32x32x3.

Each case is compiled once (``step.lower(...).compile()``, whose
``cost_analysis()["flops"]`` is the XLA flop count of the step on that device;
``flops_hlo``, the same analysis of the unoptimized HLO, is reported beside it as a
cross-check, noted when > 5 % apart), warmed up for ``--warmup`` steps, then ``--rounds``
interleaved rounds time ``--steps`` steps of every case in turn (ending in
``block_until_ready``); the figure is the median over rounds of the per-step time. samples/s
= batch / step time; achieved TFLOP/s = XLA flops / step time; fraction of peak = achieved /
peak. Peak: ``--peak_tflops``, else a table by ``device_kind`` (NVIDIA datasheets, dense, no
sparsity), for the precision the matmuls and convolutions run in: ``--precision=default``
leaves ``jax_default_matmul_precision`` unset, and on NVIDIA GPUs from Ampere on XLA then
computes float32 dots and convolutions with TF32 tensor cores (JAX docs, "Matmul precision":
"TF32 on recent GPUs"), so the TF32 peak applies; ``--precision=highest`` sets it to
``highest`` (true float32), so the float32 (CUDA-core) peak applies. The XLA flop count
includes the element-wise work (activations, pooling, loss, optimizer), which no tensor core
runs, so the fraction flatters a little: against hand-counted products it is 0.7 % of the
MLP's flops (batch 128) and 4.4 % of LeNet's (batch 32), XLA:CPU's counts.

A (model, rule) pair the library refuses is skipped and reported with its error. New cases
are not started once ``--budget_s`` seconds have passed since the start; the skipped ones are
named in the output.

On the GPU machine (no network: run from the repo root without installing; every
third-party module this imports is in the image's python3: jax 0.11 with its CUDA 13
plugin, flax, optax, orbax, absl, numpy; alearn's data dependencies are not imported):

  PYTHONUNBUFFERED=1 PYTHONPATH=$PWD python3 -m experiments.bench.bench_device \
      --out=$OUT/bench_device.json

(one call, timeout 540 s; defaults: all 3 models x 5 rules, batch 128, 5 rounds x 50 steps,
budget 360 s). Elsewhere ``pip install -e .`` and a CUDA jax (``pip install -U "jax[cuda12]"``
or ``"jax[cuda13]"``, not a dependency of alearn) give the same.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import jax
import optax
from absl import app, flags

import alearn
from alearn import train
from experiments.bench._bench_models import LeNet5, trainer_step

MODELS = ("mlp", "lenet", "resnet18")
RULES = ("bp", "fa", "dfa", "kp", "asap")

_MODELS = flags.DEFINE_list("models", list(MODELS), f"Models, from {', '.join(MODELS)}.")
_RULES = flags.DEFINE_list("rules", list(RULES), "Rules (alearn.rules names).")
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size (every model).")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps per case and round.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compiling a case.")
_PRECISION = flags.DEFINE_enum("precision", "default", ["default", "highest"],
                               "float32 matmul/conv precision: default (TF32 on NVIDIA Ampere+) "
                               "or highest (true float32).")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s of the chip for the precision "
                           "used (default: the table for the device kind).")
_BUDGET = flags.DEFINE_float("budget_s", 360.0, "No new case is started after this many seconds.")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")

#: Dense peak TFLOP/s (no sparsity) from NVIDIA's datasheets: H100 datasheet (SXM5 / PCIe),
#: H200 product page (SXM / NVL), A100 datasheet. First substring of ``device_kind`` wins.
PEAKS = (
    ("H200 NVL", {"float32": 60.0, "tf32": 417.5, "bf16": 835.5}),
    ("H200", {"float32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("H100 PCIe", {"float32": 51.2, "tf32": 378.0, "bf16": 756.0}),
    ("H100", {"float32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("A100", {"float32": 19.5, "tf32": 156.0, "bf16": 312.0}),
)
PEAK_SOURCE = "NVIDIA datasheets (H100, H200, A100), dense"


def math_precision(device: jax.Device, precision: str) -> str:
    """The arithmetic float32 dots/convolutions run in: ``tf32`` for ``default`` on an NVIDIA
    GPU of compute capability >= 8 (Ampere, Hopper), else ``float32``."""
    cc = getattr(device, "compute_capability", None)
    tf32 = device.platform == "gpu" and cc is not None and float(cc) >= 8.0
    return "tf32" if precision == "default" and tf32 else "float32"


def table_peak(device_kind: str, math: str) -> float | None:
    """Peak TFLOP/s for ``math`` from :data:`PEAKS`, or None for an unknown device."""
    for key, peaks in PEAKS:
        if key.lower() in device_kind.lower():
            return peaks[math]
    return None


def build_model(name: str):
    """(module, input shape of one sample)."""
    if name == "mlp":
        return alearn.models.create("mlp", 10, widths=(1024, 1024)), (28, 28, 1)
    if name == "lenet":
        return alearn.wrap(LeNet5()), (28, 28, 1)
    if name == "resnet18":
        return alearn.models.create("resnet18", 10), (32, 32, 3)
    raise app.UsageError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}")


def prepare(model, shape, rule_name: str, batch: int, mesh) -> dict:
    """Compiles one case: ``{"run": run(n), "flops", "compile_s"}`` (``compile_s``: trace,
    lower and compile of the step)."""
    # KP decays W and B itself (the base SGD has no weight decay: W − B shrinks evenly)
    rule = alearn.rules.create(rule_name, **({"decay_kernel": True} if rule_name == "kp" else {}))
    opt = train.create_rule_optimizer(rule, optax.sgd(0.01, momentum=0.9))
    step, state, placed, _ = trainer_step(model, rule, opt, shape=shape, batch=batch, mesh=mesh)
    t0 = time.perf_counter()
    lowered = step.lower(state, placed)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    flops, flops_hlo = (_flops(c.cost_analysis) for c in (compiled, lowered))
    box = {"state": state}

    def run(n: int) -> None:
        s = box["state"]
        for _ in range(n):
            s, metrics = compiled(s, placed)
        jax.block_until_ready((s, metrics))
        box["state"] = s

    return {"run": run, "flops": flops, "flops_hlo": flops_hlo, "compile_s": compile_s}


def _flops(cost_analysis) -> float | None:
    """``cost_analysis()["flops"]`` (a dict, or a one-element list in older jax), or None."""
    try:
        cost = cost_analysis()
    except Exception:  # pylint: disable=broad-except  # a backend without the analysis
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def _log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def benchmark(models, rules, *, batch, steps, rounds, warmup, precision, peak_tflops,
              budget_s) -> dict:
    """Runs the cases; returns the JSON-able report (see the module docstring)."""
    t0 = time.perf_counter()
    device = jax.local_devices()[0]
    mesh = train.data_mesh([device])
    math = math_precision(device, precision)
    peak = peak_tflops if peak_tflops is not None else table_peak(device.device_kind, math)
    peak_source = ("--peak_tflops" if peak_tflops is not None
                   else PEAK_SOURCE if peak is not None else None)
    _log(f"jax {jax.__version__} on {device.platform} {device.device_kind!r}; precision "
         f"{precision} -> {math}; peak {peak} TFLOP/s ({peak_source})", t0)
    cases, skipped = {}, []
    for m in models:
        model, shape = build_model(m)
        for r in rules:
            if time.perf_counter() - t0 >= budget_s:
                skipped.append({"model": m, "rule": r, "why": f"budget_s={budget_s} spent"})
                continue
            _log(f"compiling {m}/{r} ...", t0)
            t_case = time.perf_counter()
            try:
                case = prepare(model, shape, r, batch, mesh)
            except (ValueError, TypeError, NotImplementedError) as e:
                _log(f"skip {m}/{r}: the library refuses it: {e}", t0)
                skipped.append({"model": m, "rule": r, "why": f"{type(e).__name__}: {e}"})
                continue
            case["run"](warmup)
            if case["flops"] is None or (case["flops_hlo"] and abs(
                    case["flops"] / case["flops_hlo"] - 1) > 0.05):
                _log(f"  note {m}/{r}: compiled flop count {case['flops']} vs the unoptimized "
                     f"HLO's {case['flops_hlo']} (> 5 % apart or missing)", t0)
            case["prepare_s"] = time.perf_counter() - t_case
            cases[(m, r)] = case
            _log(f"  {m}/{r}: ready in {case['prepare_s']:.1f}s (compile "
                 f"{case['compile_s']:.1f}s), {(case['flops'] or 0) / 1e9:.3f} GFLOP/step", t0)
    for s in skipped:
        _log(f"skipped {s['model']}/{s['rule']}: {s['why']}", t0)
    times = {k: [] for k in cases}
    for i in range(rounds):
        for k, case in cases.items():
            t = time.perf_counter()
            case["run"](steps)
            times[k].append((time.perf_counter() - t) / steps)
        _log(f"round {i + 1}/{rounds} done", t0)
    rows = []
    for (m, r), case in cases.items():
        sec = statistics.median(times[(m, r)])
        tflops = (case["flops"] or float("nan")) / sec / 1e12
        rows.append({"model": m, "rule": r, "batch": batch, "step_ms": sec * 1e3,
                     "round_step_ms": [t * 1e3 for t in times[(m, r)]],
                     "samples_per_s": batch / sec, "flops": case["flops"],
                     "flops_hlo": case["flops_hlo"],
                     "achieved_tflops": tflops,
                     "frac_of_peak": tflops / peak if peak and case["flops"] else None,
                     "compile_s": case["compile_s"], "prepare_s": case["prepare_s"]})
    return {"jax": jax.__version__, "platform": device.platform,
            "device_kind": device.device_kind, "precision": precision, "math": math,
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "peak_tflops": peak, "peak_source": peak_source, "batch": batch, "steps": steps,
            "rounds": rounds, "warmup": warmup, "budget_s": budget_s,
            "wall_s": time.perf_counter() - t0, "results": rows, "skipped": skipped}


def table(report: dict) -> str:
    """One line per case."""
    lines = [f"{'model':9} {'rule':5} {'batch':>5} {'ms/step':>9} {'samples/s':>11} "
             f"{'GFLOP/step':>10} {'TFLOP/s':>8} {'of peak':>8} {'compile_s':>9}"]
    for row in report["results"]:
        frac = "n/a" if row["frac_of_peak"] is None else f"{row['frac_of_peak']:.4f}"
        lines.append(f"{row['model']:9} {row['rule']:5} {row['batch']:5d} {row['step_ms']:9.3f} "
                     f"{row['samples_per_s']:11.1f} {(row['flops'] or 0) / 1e9:10.3f} "
                     f"{row['achieved_tflops']:8.3f} {frac:>8} {row['compile_s']:9.1f}")
    lines.extend(f"skipped {s['model']}/{s['rule']}: {s['why']}" for s in report["skipped"])
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for m in _MODELS.value:
        build_model(m)  # fails early on an unknown name
    unknown = sorted(set(_RULES.value) - set(alearn.rules.names()))
    if unknown:
        raise app.UsageError(f"unknown rule(s) {', '.join(unknown)}; "
                             f"choose from: {', '.join(alearn.rules.names())}")
    if min(_BATCH.value, _STEPS.value, _ROUNDS.value) < 1 or _WARMUP.value < 0:
        raise app.UsageError("--batch, --steps and --rounds must be >= 1, --warmup >= 0")
    with jax.default_matmul_precision(None if _PRECISION.value == "default" else "highest"):
        report = benchmark(_MODELS.value, _RULES.value, batch=_BATCH.value, steps=_STEPS.value,
                           rounds=_ROUNDS.value, warmup=_WARMUP.value,
                           precision=_PRECISION.value, peak_tflops=_PEAK.value,
                           budget_s=_BUDGET.value)
    print(table(report), flush=True)
    if _OUT.value:
        with open(_OUT.value, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {_OUT.value}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
