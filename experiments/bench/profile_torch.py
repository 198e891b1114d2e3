"""Where PyTorch's training step of the conv-net benchmark's nets spends its time.

The PyTorch peer of ``profile_step``: the same ResNet-18 / AlexNet (``_torch_peers``,
32x32x3, batch 128, SGD momentum 0.9) trained by plain autograd (``--mode=bp``) or by
BioTorch (``fa`` / ``dfa``), ``--steps`` steps under ``torch.profiler`` after a warm-up;
prints the operators' self CPU time per step, largest first (``key_averages``), and their
share of the total.

Usage:
  python -m experiments.bench.profile_torch --model=resnet18 [--mode=bp --width=0.25]
"""

from __future__ import annotations

from absl import app, flags

from experiments.bench import _torch_peers
from experiments.bench._bench_models import synthetic_batch

_MODEL = flags.DEFINE_enum("model", "resnet18", ("resnet18", "alexnet"), "Net.")
_MODE = flags.DEFINE_enum("mode", "bp", ("bp", "fa", "dfa"), "PyTorch BP or BioTorch FA/DFA.")
_WIDTH = flags.DEFINE_float("width", 0.25, "Width multiplier.")
_STEPS = flags.DEFINE_integer("steps", 10, "Profiled steps.")
_TOP = flags.DEFINE_integer("top", 25, "Operators to print.")


def main(argv):
    del argv
    import torch  # pylint: disable=import-outside-toplevel
    images, labels = synthetic_batch((32, 32, 3), 128)
    run = _torch_peers.step_case(_MODEL.value, _WIDTH.value, _MODE.value, images, labels)
    if run is None:
        raise SystemExit("torch (and for fa/dfa biotorch) is not installed: "
                         'pip install -e ".[bench]" && pip install --no-deps biotorch==0.0.16')
    run(3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run(_STEPS.value)
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    print(f"{_MODEL.value} torch {_MODE.value}: {total / _STEPS.value:.0f} us of operator self "
          f"time per step")
    for e in rows[:_TOP.value]:
        print(f"{e.self_cpu_time_total / _STEPS.value:9.1f} us {100 * e.self_cpu_time_total / total:5.1f} %"
              f"  {e.key[:40]:40s} calls/step {e.count / _STEPS.value:.0f}")


if __name__ == "__main__":
    app.run(main)
