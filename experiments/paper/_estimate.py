"""Estimated wall time of ``experiments.reproduce`` runs (printed by ``--dry_run``).

The cost model, from measured runs:

- ``docs/results/walls.json`` (written by ``experiments.report`` from each table's
  ``manifest.json``): the wall time of every ``--scale=cpu`` run of the committed report, on
  the 2-core machine named there. A cpu-scale run is estimated by its own measurement (a run
  shared with an earlier table by that run's).
- A run without a measurement (the paper scale) is estimated from the measured cost per
  training example and epoch of the same model at its cpu width (the median over its cpu
  runs, evaluation and start-up included), scaled linearly by epochs, training-set size and
  pixels per image, and by the square of the width ratio (convolution and dense FLOPs grow
  with width²); ResNet-34 counts as 2x ResNet-18. This is a CPU figure (the same 2-core
  machine): an accelerator is one to three orders of magnitude faster, and no accelerator
  measurement is stored yet, so paper-scale figures only rank the tables by cost.
"""

from __future__ import annotations

import functools
import json
import os
import statistics

from experiments.paper import tables

CPU_PIXELS = 28 * 28 * 1
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WALLS = os.path.join(ROOT, "docs", "results", "walls.json")
FAMILY = {"resnet34": ("resnet18", 2.0), "resnet18_nsc": ("resnet18", 1.0)}
TRAIN_SIZES = {"mnist": 60000, "mnist5k": 4000, "fashion_mnist": 60000, "svhn_cropped": 73257,
               "cifar10": 50000, "cifar100": 50000, "tiny_imagenet": 100000, "synthetic": 512,
               "ag_news_subset": 120000, "imdb_reviews": 25000, "sst2": 67349}


@functools.lru_cache(maxsize=1)
def measured() -> dict[str, dict[str, float]]:
    """table -> run name -> measured wall seconds (shared runs resolved); {} without a file."""
    if not os.path.exists(WALLS):
        return {}
    with open(WALLS) as f:
        walls = json.load(f)
    out: dict[str, dict[str, float]] = {}
    for tid, runs in walls.items():
        for name, entry in runs.items():
            shared = entry.get("shared_with")
            if shared:
                t, _, n = shared.partition("/")
                entry = walls.get(t, {}).get(n, {})
            if "wall_time_s" in entry:
                out.setdefault(tid, {})[name] = float(entry["wall_time_s"])
    return out


def _width(config) -> float:
    return float(config.model_kwargs.get("width_multiplier", 1.0))


def train_size(config) -> int:
    """Training examples per epoch of ``config`` (``train_examples``, ``validation``)."""
    opts = config.get("dataset_options", None) or {}
    n = TRAIN_SIZES.get(config.dataset, 4000)
    if opts.get("validation"):
        n = round(n * (1 - float(opts["validation"])))
    return int(opts.get("train_examples") or n)


@functools.lru_cache(maxsize=1)
def _per_example_epoch() -> dict[str, tuple[float, float]]:
    """model -> (median seconds per training example and epoch, the width it ran at)."""
    from experiments.paper import _tables_cpu

    costs: dict[str, list] = {}
    walls = measured()
    for tid, runs in walls.items():
        if tid not in tables.TABLES:
            continue
        with _tables_cpu.pending_allowed():  # the lr does not change a run's cost
            cpu_runs = tables.runs(tid, "cpu")
        for run in cpu_runs:
            if run.kind == "train" and run.config is not None and run.name in runs:
                c = run.config
                per = runs[run.name] / (int(c.epochs) * train_size(c))
                costs.setdefault(c.model, []).append((per, _width(c)))
    return {m: (statistics.median(s for s, _ in v), v[0][1]) for m, v in costs.items()}


def estimate(table_id: str, run: tables.Run, scale: str) -> float | None:
    """Estimated wall seconds of ``run`` on the 2-core CPU; None when the model has no data."""
    if scale == "cpu" and run.name in measured().get(table_id, {}):
        return measured()[table_id][run.name]
    c = run.config
    if c is None or run.kind not in ("train", "foa"):
        return None
    model, factor = FAMILY.get(c.model, (c.model, 1.0))
    base = _per_example_epoch().get(model)
    if base is None:
        return None
    sec, width = base
    from alearn.data import specs

    spec = specs.SPECS.get(c.dataset)
    pixels = 1
    for d in (spec.image_shape if spec else (28, 28, 1)):
        pixels *= d
    return (factor * sec * int(c.epochs) * train_size(c) * pixels / CPU_PIXELS
            * (_width(c) / width) ** 2)


def fmt(seconds: float | None) -> str:
    """``"~42 s"``, ``"~12 min"``, ``"~3.4 h"``, ``"~5 days"``, ``"~9 years"``; ``"unknown"``
    for None."""
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"~{seconds / 3600:.1f} h"
    if seconds < 365 * 86400:
        return f"~{seconds / 86400:.0f} days"
    return f"~{seconds / (365 * 86400):.0f} years"
