"""Why ASAP trails DFA on the cpu-scale AlexNet (issue 26): an ablation, same seeds.

  python -m experiments.ablation_asap_alexnet --workdir=/work/runs_cpu [--seeds=0,1,2]
      [--cells=asap,asap_dense_he,...] [--report_only]

Every cell is Table 5.2's cpu-scale AlexNet run (``experiments/paper/_tables_cpu.py``: AlexNet
x0.125, 6,000 Fashion-MNIST images, 10 epochs, Table 5.1's lr x the lr sweep's factor, read
from ``<workdir>/lr_sweep`` as the harness does) with one thing changed:

- ``bp``, ``fa``, ``dfa``, ``asap``: Table 5.2's runs unchanged (references; ASAP = the
  authors' grouping, first conv frozen, FC layers by FA with B ~ U(-1, 1));
- ``asap_dense_he``: ASAP's FC layers by FA with He-scaled B (``dense_feedback_init=
  he_normal``, the scale of the FA rule's B) instead of U(-1, 1);
- ``asap_dense_own``: FC layers by ASAP's own update with their own input
  (``dense="own_input"``, learned B);
- ``asap_first_trained``: the first conv trained with its own input (``freeze_first=False``);
- ``asap_own_trained``: both of the last two;
- ``asap_lr_x0.3``, ``asap_lr_x3``, ``asap_lr_x9`` and ``dfa_lr_x3``: the lr times that
  factor (x9 = BP's rate at this scale when the sweep picks BP x3 and ASAP x100);
- ``asap_w0.25``, ``dfa_w0.25``: width x0.25 instead of x0.125.

Runs go to ``<workdir>/ablation_asap_alexnet/<cell>_s<seed>/`` through the reproduce
harness' own steps: a run whose ``results.json`` exists is skipped, an unfinished one resumes
from its checkpoints, and a cell whose config is a Table 5.2 run's (``bp``, ``fa``, ``dfa``,
``asap``) is trained once and shared with ``wt5.2`` through ``<workdir>/cells.json``
(whichever runs first; the other is a symlink). Seeds loop outermost, so ``--seeds=0`` gives
a first pass over every cell. Writes ``ablation.json`` (per cell: setup, lr, each seed's
final test accuracy and last-epoch gain, mean ± std) and ``ablation.md`` (the table, Δ vs
``asap``) in that folder from whatever has finished, and ``manifest.json`` (each run's
wall time and git commit, as the reproduce harness' manifests, which the report reads for
the runs ``wt5.2`` shares from here).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable

from absl import flags, logging

from experiments import _cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The reproduce workdir (holds lr_sweep/).")
_SEEDS = flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds (Table 5.2's: 0,1,2).")
_CELLS = flags.DEFINE_string("cells", "", "Comma-separated cells (default: all).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only write ablation.json/.md.")
flags.mark_flag_as_required("workdir")

TABLE = "ablation_asap_alexnet"


def _hp(**kw) -> Callable:
    def f(c):
        for k, v in kw.items():
            c.rule_hparams[k] = v
    return f


def _lr(x: float) -> Callable:
    def f(c):
        c.learning_rate *= x
    return f


def _width(w: float) -> Callable:
    def f(c):
        c.model_kwargs.width_multiplier = w
    return f


# cell -> (rule, change, what changes)
CELLS: dict[str, tuple[str, Callable | None, str]] = {
    "bp": ("bp", None, "BP (Table 5.2)"),
    "fa": ("fa", None, "FA (Table 5.2)"),
    "dfa": ("dfa", None, "DFA (Table 5.2)"),
    "asap": ("asap", None, "ASAP (Table 5.2): FC by FA, B ~ U(-1, 1); first conv frozen"),
    "asap_dense_he": ("asap", _hp(dense_feedback_init="he_normal"),
                      "FC by FA with He-scaled B"),
    "asap_dense_own": ("asap", _hp(dense="own_input"), "FC by ASAP, own input"),
    "asap_first_trained": ("asap", _hp(freeze_first=False), "first conv trained"),
    "asap_own_trained": ("asap", _hp(dense="own_input", freeze_first=False),
                         "FC by ASAP, own input + first conv trained"),
    "asap_lr_x0.3": ("asap", _lr(1 / 3), "lr x1/3"),
    "asap_lr_x3": ("asap", _lr(3.0), "lr x3"),
    "asap_lr_x9": ("asap", _lr(9.0), "lr x9"),
    "dfa_lr_x3": ("dfa", _lr(3.0), "DFA, lr x3"),
    "asap_w0.25": ("asap", _width(0.25), "width x0.25"),
    "dfa_w0.25": ("dfa", _width(0.25), "DFA, width x0.25"),
}


def build(cells: list[str], seeds: tuple[int, ...]) -> list:
    """The runs (``tables.Run``), seeds outermost; needs the sweep (``set_workdir``)."""
    from experiments.paper import tables

    out = []
    for seed in seeds:
        for name in cells:
            rule, change, what = CELLS[name]
            c = tables._wt(rule, "alexnet", "mnist", "cpu")  # Table 5.2's cpu-scale config
            if change is not None:
                change(c)
            c.seed = int(seed)
            out.append(tables.Run(f"{name}_s{seed}", "Fashion-MNIST / AlexNet", what, config=c,
                                  cell=name, seed=int(seed)))
    return out


def _history(rundir: str) -> list[float]:
    path = os.path.join(rundir, "metrics.jsonl")
    accs = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    accs.append(float(json.loads(line)["test_accuracy"]))
                except (ValueError, KeyError, TypeError):
                    pass
    return accs


def summarize(table_dir: str, runs: list) -> dict:
    """Per cell: setup, lr, finished seeds' final accuracy (%), last-epoch gain, mean ± std."""
    out: dict[str, dict] = {}
    for run in runs:
        d = out.setdefault(run.cell_name, {"what": run.col, "setup": run.setup(),
                                           "seeds": {}})
        rundir = os.path.join(table_dir, run.name)
        res = os.path.join(rundir, "results.json")
        if not os.path.exists(res):
            continue
        with open(res) as f:
            acc = 100 * float(json.load(f)["test_accuracy"])
        hist = [100 * a for a in _history(rundir)]
        d["seeds"][str(run.seed)] = {"accuracy": acc, "curve": hist,
                                     "last_epoch_gain": hist[-1] - hist[-2]
                                     if len(hist) > 1 else None}
    for d in out.values():
        accs = [s["accuracy"] for s in d["seeds"].values()]
        d["mean"] = statistics.mean(accs) if accs else None
        d["std"] = statistics.stdev(accs) if len(accs) > 1 else None
    return out


def markdown(summary: dict) -> str:
    base = summary.get("asap", {}).get("mean")
    lines = ["| cell | what changes | setup | test accuracy per seed (%) | mean ± std | "
             "Δ vs asap (pt) | last-epoch gain (pt) |", "|---|---|---|---|---|---|---|"]
    for name, d in summary.items():
        seeds = " / ".join(f"{d['seeds'][k]['accuracy']:.2f}" for k in sorted(d["seeds"]))
        mean = ("—" if d["mean"] is None else f"{d['mean']:.2f}"
                + (f" ± {d['std']:.2f}" if d["std"] is not None else ""))
        delta = ("—" if d["mean"] is None or base is None or name == "asap"
                 else f"{d['mean'] - base:+.2f}")
        gains = " / ".join(f"{d['seeds'][k]['last_epoch_gain']:+.1f}" for k in sorted(d["seeds"])
                           if d["seeds"][k]["last_epoch_gain"] is not None)
        lines.append(f"| {name} | {d['what']} | {d['setup']} | {seeds or '—'} | {mean} | "
                     f"{delta} | {gains or '—'} |")
    return "\n".join(lines) + "\n"


def write_report(table_dir: str, runs: list) -> str:
    summary = summarize(table_dir, runs)
    os.makedirs(table_dir, exist_ok=True)
    with open(os.path.join(table_dir, "ablation.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = markdown(summary)
    with open(os.path.join(table_dir, "ablation.md"), "w") as f:
        f.write("# ASAP on the cpu-scale AlexNet: ablation (issue 26)\n\n"
                "Generated by `python -m experiments.ablation_asap_alexnet` "
                f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).\n\n" + md)
    return md


def main(argv) -> int:
    if len(argv) > 1:
        raise _cli.app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from experiments import reproduce
    from experiments.paper import _tables_cpu

    workdir = _WORKDIR.value
    seeds = tuple(int(s) for s in _SEEDS.value.split(",") if s.strip())
    cells = [c.strip() for c in _CELLS.value.split(",") if c.strip()] or list(CELLS)
    bad = [c for c in cells if c not in CELLS]
    if bad:
        raise _cli.app.UsageError(f"unknown cell(s) {', '.join(bad)}; valid: {', '.join(CELLS)}")
    _tables_cpu.set_workdir(workdir)  # the sweep's factors (raises naming the command)
    table_dir = os.path.join(workdir, TABLE)
    all_runs = build(list(CELLS), tuple(sorted(set(seeds) | {0, 1, 2})))
    if not _REPORT_ONLY.value:
        reproduce.use_compilation_cache(workdir)
        manifest_path = os.path.join(table_dir, reproduce.MANIFEST)
        manifest = reproduce._load(manifest_path)
        version = reproduce.code_version()
        manifest.update(table=TABLE, scale="cpu", machine=reproduce.machine(),
                        title="Why ASAP trails DFA on the cpu-scale AlexNet (issue 26)",
                        # the command that makes (or resumes) every cell and seed
                        command=f"python -m experiments.ablation_asap_alexnet --workdir={workdir}",
                        code_version=version)
        manifest.setdefault("runs", {})
        for run in build(cells, seeds):
            rundir = os.path.join(table_dir, run.name)
            shared = reproduce.link_shared(run, rundir, workdir)
            if reproduce.is_done(run, rundir):
                if not shared:
                    reproduce.record_cell(run, rundir, workdir)
                continue
            t0 = time.perf_counter()
            reproduce.execute(run, rundir)
            wall = time.perf_counter() - t0
            reproduce.record_cell(run, rundir, workdir)
            manifest["runs"][run.name] = reproduce.finished_entry(run, wall, version)
            reproduce.write_json(manifest_path, manifest)  # each run's commit, as reproduce's
            print(reproduce.summary_line(TABLE, run, rundir, wall), flush=True)
            write_report(table_dir, all_runs)
    print(write_report(table_dir, all_runs))
    return 0


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    _cli.run(main)
