r"""Trainer step time of a paper model, to compare two versions of alearn (issue 25).

Issue 25 moved the paper models from hand-threaded rule-aware layers to plain Flax trained
through ``alearn.wrap``; the compiled step must not get slower. This script times the real
trainer step (``experiments.bench._bench_models.trainer_step``: ``make_train_step`` with the
rule's hook, SGD with momentum, batch 128, one synthetic batch) of one (model, rule) case
and prints one JSON line. It imports whatever ``alearn`` is first on ``sys.path``, so the
same file times an older checkout::

    # old code in a worktree (git worktree add /work/before <rev>), new code here, alternated:
    for round in 1 2; do for v in /work/before /work/main; do
      (cd $v && PYTHONPATH=$v python /work/main/experiments/bench/bench_model_path.py \
          --model=resnet18 --rule=dfa)
    done; done

Cases: ``mlp`` (784-1024-1024-10, the quickstart's), ``lenet`` (the benchmarks' LeNet-5,
``experiments.bench._bench_models.LeNet5``), ``resnet18`` (x0.25 width, 32x32x3). Run only on a
quiet machine (``uptime``; nothing else running): the figure is a median of ``--steps``
steps after ``--warmup``.
"""

from __future__ import annotations

import inspect
import json
import statistics
import time

from absl import app, flags
import jax
import optax

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "mlp", ["mlp", "lenet", "resnet18"], "which model")
flags.DEFINE_string("rule", "bp", "rule name")
flags.DEFINE_integer("steps", 15, "timed steps")
flags.DEFINE_integer("warmup", 3, "untimed steps after compilation")


def _bench():
    """``_bench_models`` of the checkout whose ``alearn`` is imported (experiments/bench/
    since issue 25, experiments/ before), loaded from that checkout's file."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    import alearn  # pylint: disable=import-outside-toplevel
    root = os.path.dirname(os.path.dirname(alearn.__file__))
    for rel in ("experiments/bench/_bench_models.py", "experiments/_bench_models.py"):
        path = os.path.join(root, rel)
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location("_bench_models_of_checkout", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # (dataclasses look their module up)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(f"no _bench_models.py under {root}/experiments")


def _case(name: str):
    import alearn  # pylint: disable=import-outside-toplevel
    _bench_models = _bench()
    if name == "mlp":
        return alearn.models.create("mlp", 10, widths=(1024, 1024)), (28, 28, 1)
    if name == "lenet":
        lenet = _bench_models.LeNet5()
        if "rule" not in inspect.signature(type(lenet).__call__).parameters:
            lenet = alearn.wrap(lenet)  # plain Flax since issue 25 (a native model before)
        return lenet, (28, 28, 1)
    return alearn.models.create("resnet18", 10, width_multiplier=0.25), (32, 32, 3)


def main(argv):
    del argv
    import alearn  # pylint: disable=import-outside-toplevel
    _bench_models = _bench()
    model, shape = _case(FLAGS.model)
    rule = alearn.rules.create(FLAGS.rule)
    opt = optax.chain(rule.transform(), optax.sgd(0.01, momentum=0.9))
    step, state, batch, _ = _bench_models.trainer_step(model, rule, opt, shape=shape)
    t0 = time.perf_counter()
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    for _ in range(FLAGS.warmup):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(FLAGS.steps):
        t = time.perf_counter()
        state, _ = step(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
    print(json.dumps({"alearn": alearn.__file__, "model": FLAGS.model, "rule": FLAGS.rule,
                      "median_ms": 1e3 * statistics.median(times),
                      "compile_s": round(compile_s, 2)}))


if __name__ == "__main__":
    app.run(main)
