"""Reproduce a table or figure of the two theses with one command.

  python -m experiments.reproduce --table=wt5.2 --scale=cpu --workdir=/tmp/repro [--dry_run]

Tables (``experiments/paper/tables.py``): al3.1 al3.2 al3.3 al3.4 al_sigmoid al_pipeline (AL
thesis, Kao 2019) and wt3.1 wt5.1 wt5.2 wt5.3 wt5.4 wt5.5 wt_k4 wt6.1 (ASAP thesis, Woo
2023); ``--table=all`` runs every one. Each run goes to ``<workdir>/<table>/<run>/``; a run
whose ``results.json`` exists is skipped (resume), and ``<workdir>/<table>/manifest.json``
records the command and each run's wall time. ``--scale=paper`` checks that every dataset
is prepared on disk before the first run starts. ``python -m experiments.report
--workdir=<dir>`` then renders the tables beside the papers' numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from absl import logging

from experiments.paper import _estimate, tables
from experiments.paper._reproduce_data import DatasetMissingError, check_datasets, print_data_status
from experiments.paper._rundirs import (  # noqa: F401 - also used through this module
    CELLS, KEY_FILE, RESULTS, StaleRunError, finished_entry, is_done, link_shared, record_cell,
    run_key, write_json)
from experiments.paper._rundirs import load_json as _load
from experiments.paper.tables import Run

MANIFEST = "manifest.json"


def machine() -> str:
    """'<cores> cores, <CPU model>' of this machine (recorded in each table's manifest)."""
    from alearn._machine import cpu_model

    return f"{os.cpu_count()} cores, {cpu_model()}"


def code_version() -> str:
    """The git commit of this checkout ('+dirty' with local changes); 'unknown' outside git."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def execute(run: Run, rundir: str) -> None:
    """Runs one unit of work into ``rundir`` (see ``tables.Run`` for the kinds)."""
    from experiments.paper import _reproduce_kinds as kinds

    os.makedirs(rundir, exist_ok=True)
    fn = {"train": kinds.train, "foa": kinds.foa, "al_compare": kinds.al_compare,
          "memory": kinds.memory, "pipeline": kinds.pipeline}[run.kind]
    fn(run, rundir)


def _accuracy(rundir: str) -> str:
    res = _load(os.path.join(rundir, RESULTS))
    acc = res.get("test_accuracy")
    if isinstance(acc, dict):  # AL vs BP twin
        return ", ".join(f"{k} {v:.4f}" for k, v in acc.items() if isinstance(v, (int, float)))
    return f"{acc:.4f}" if isinstance(acc, (int, float)) else "n/a (not a training run)"


def summary_line(table_id: str, run: Run, rundir: str, wall: float) -> str:
    """One line per finished run: table, row, method, test accuracy, wall time."""
    return (f"{table_id} | {run.row} | {run.col} | test accuracy {_accuracy(rundir)} | "
            f"{wall:.1f} s  ({run.name})")


def reproduce(table_id: str, scale: str, workdir: str, *, dry_run: bool = False,
              data_dir: str | None = None, seeds: tuple[int, ...] | None = None,
              out=sys.stdout, check_data: bool | None = None,
              only: tuple[str, ...] = ()) -> list[dict]:
    """Runs (or lists) every run of ``table_id`` at ``scale``; returns one dict per run.

    ``only``: run-name prefixes; when given, just the runs whose name starts with one of
    them (e.g. ``("resnet",)``: a table's ResNet cells; the others are not built into the
    report of this call, and a later call without ``only`` runs them).

    ``check_data`` (default: at paper scale) checks every dataset of the table's runs that
    still have to run before the first one starts (:func:`check_datasets`); a dry run
    never does (``main`` reports the data after its listing).
    """
    from experiments.paper import _tables_cpu

    _tables_cpu.set_workdir(workdir, allow_pending=dry_run)
    runs = tables.runs(table_id, scale, seeds)
    if only:
        runs = [r for r in runs if r.name.startswith(tuple(only))]
    table_dir = os.path.join(workdir, table_id)
    if data_dir:
        for r in runs:
            if r.config is not None:
                r.config.data_dir = data_dir
    if (scale == "paper" if check_data is None else check_data) and not dry_run:
        check_datasets([r for r in runs if not os.path.exists(
            os.path.join(table_dir, r.name, RESULTS))], data_dir)
    manifest_path = os.path.join(table_dir, MANIFEST)
    manifest = _load(manifest_path)
    command = (f"python -m experiments.reproduce --table={table_id} --scale={scale} "
               f"--workdir={workdir}" + (f" --data_dir={data_dir}" if data_dir else "")
               + (f" --seeds={','.join(map(str, seeds))}" if seeds else "")
               + (f" --runs={','.join(only)}" if only else ""))
    version = code_version()  # the table's (its last command's) and each run's that runs now
    manifest.update(table=table_id, scale=scale, command=command,
                    title=tables.TABLES[table_id].title, machine=machine(),
                    code_version=version)
    manifest.setdefault("runs", {})
    report = []
    for run in runs:
        rundir = os.path.join(table_dir, run.name)
        shared = None if dry_run else link_shared(run, rundir, workdir)
        done = is_done(run, rundir)
        item = {"run": run.name, "row": run.row, "col": run.col, "kind": run.kind,
                "setup": run.setup(), "status": "done" if done else "todo", "dir": rundir}
        report.append(item)
        if dry_run:
            est = _estimate.estimate(table_id, run, scale)
            item["estimate_s"] = est
            print(f"[{item['status']}] {table_id}/{run.name}: {run.row} | {run.col} | "
                  f"{item['setup']} | est. {_estimate.fmt(est)}", file=out)
            continue
        if done:
            if shared:
                manifest["runs"][run.name] = {"wall_time_s": 0.0, "setup": run.setup(),
                                              "shared_with": os.path.relpath(shared, workdir)}
                print(f"{table_id} | {run.row} | {run.col} | same run as "
                      f"{os.path.relpath(shared, workdir)} (not trained again)", file=out)
            else:
                record_cell(run, rundir, workdir)
                logging.info("skipping %s (results exist)", rundir)
            continue
        t0 = time.perf_counter()
        execute(run, rundir)
        wall = time.perf_counter() - t0
        record_cell(run, rundir, workdir)
        item["status"], item["wall_time_s"] = "ran", wall
        manifest["runs"][run.name] = finished_entry(run, wall, version)
        write_json(manifest_path, manifest)
        print(summary_line(table_id, run, rundir, wall), file=out, flush=True)
    if dry_run:
        _print_estimate(table_id, scale, report, out)
        if scale == "cpu" and _tables_cpu.PENDING:
            print(f"{table_id}: learning rates shown at the paper's value until the lr_sweep "
                  f"table has run ({', '.join(sorted('/'.join(p) for p in _tables_cpu.PENDING))})",
                  file=out)
    if not dry_run:
        walls = [v.get("wall_time_s", 0.0) for v in manifest["runs"].values()]
        manifest["total_wall_time_s"] = sum(walls)
        write_json(manifest_path, manifest)
    return report


def _print_estimate(table_id: str, scale: str, items: list[dict], out) -> None:
    """One line: the table's estimated wall time (``experiments/paper/_estimate.py``'s model)."""
    todo = [i for i in items if i["status"] == "todo"]
    known = [i["estimate_s"] for i in todo if i["estimate_s"] is not None]
    how = ("measured per run on the 2-core dev machine, docs/results" if scale == "cpu" else
           "on the 2-core CPU, scaled from the cpu-scale per-epoch costs: not a machine for this "
           "scale, and no accelerator measurement is stored yet")
    unknown = len(todo) - len(known)
    print(f"{table_id}: {len(todo)} of {len(items)} runs to do, estimated "
          f"{_estimate.fmt(sum(known)) if known else 'unknown'} ({how})"
          + (f"; {unknown} run(s) without an estimate" if unknown else ""), file=out)


def use_compilation_cache(workdir: str) -> None:
    """XLA's persistent compilation cache in ``<workdir>/.jax_cache`` (unless
    ``$JAX_COMPILATION_CACHE_DIR`` names one): the seeds of a cell, and runs of the same model
    in later tables, then compile once (about 10-20 s per run on the 2-core CPU)."""
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags; an unknown table id exits listing the valid ones."""
    p = argparse.ArgumentParser(prog="python -m experiments.reproduce",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True,
                   help=f"table id or 'all'; one of: {', '.join(tables.TABLE_IDS)}")
    p.add_argument("--scale", default="cpu", choices=tables.SCALES)
    p.add_argument("--workdir", required=True)
    p.add_argument("--dry_run", action="store_true", help="list the runs, run nothing")
    p.add_argument("--seeds", default="", help="comma-separated seeds per cell (default: "
                   + "; ".join(f"{k} {','.join(map(str, v))}" for k, v in tables.SEEDS.items())
                   + ")")
    p.add_argument("--data_dir", default="", help="prepared TFDS data (default $TFDS_DATA_DIR)")
    p.add_argument("--runs", default="", help="comma-separated run-name prefixes: only those "
                   "runs of each table (e.g. --runs=resnet,alexnet: the lr_sweep's ResNet and "
                   "AlexNet cells)")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    args = p.parse_args(argv)
    if args.data_dir and not os.path.isdir(args.data_dir):
        p.error(f"--data_dir={args.data_dir} is not a directory")
    ids = tables.TABLE_IDS if args.table == "all" else tuple(
        tables.ALIASES.get(t, t) for t in args.table.split(","))
    for t in ids:
        if t in tables.AMBIGUOUS:
            p.error(f"table id {t!r} is ambiguous (both theses have it): use one of "
                    f"{', '.join(tables.AMBIGUOUS[t])}")
    bad = [t for t in ids if t not in tables.TABLES]
    if bad:
        p.error(f"unknown table id(s) {', '.join(bad)}; valid ids: {', '.join(tables.TABLE_IDS)}"
                " (or 'all')")
    args.tables = ids
    args.only = tuple(x.strip() for x in args.runs.split(",") if x.strip())
    try:
        args.seed_list = tuple(int(x) for x in args.seeds.split(",") if x.strip()) or None
    except ValueError:
        p.error(f"--seeds={args.seeds!r}: want comma-separated non-negative integers")
    if args.seed_list and min(args.seed_list) < 0:
        p.error(f"--seeds={args.seeds!r}: seeds must be non-negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    from experiments import _cli

    args = parse_args(argv)
    logging.set_verbosity(logging.INFO)
    _cli.quiet_logs()  # orbax's per-save INFO lines and JAX's backend probing stay out

    if not args.dry_run:
        use_compilation_cache(args.workdir)

    def run():
        if args.scale == "paper" and not args.dry_run:  # every table's data before any run
            try:
                check_datasets([r for t in args.tables
                                for r in tables.runs(t, "paper", args.seed_list)],
                               args.data_dir or None)
            except DatasetMissingError as e:
                _cli.fail(str(e), _cli.USAGE_EXIT, args.verbose)
        from experiments.paper._tables_cpu import SweepPendingError

        for t in args.tables:
            try:
                reproduce(t, args.scale, args.workdir, dry_run=args.dry_run,
                          data_dir=args.data_dir or None, seeds=args.seed_list,
                          check_data=True, only=args.only)
            except (SweepPendingError, StaleRunError) as e:  # the message says what to do
                _cli.fail(str(e), _cli.USAGE_EXIT, args.verbose)
            except DatasetMissingError as e:
                _cli.fail(str(e), _cli.USAGE_EXIT, args.verbose)
        if args.dry_run:
            print_data_status(args.tables, args.scale, args.seed_list, args.data_dir or None)
    return _cli.guard(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
