"""Run directories: when a run is done, its key, and runs shared between tables.

A finished run directory holds ``results.json`` (written last by every run kind) and
``run_key.txt`` (:func:`run_key` of what it computed); ``<workdir>/cells.json`` maps each run
key to the directory that computed it, so a second table asking for the same training links
to it (:func:`link_shared`) instead of training again. Used by ``experiments.reproduce``
and by the run kinds (``_reproduce_kinds``), which both sit above this module.
"""

from __future__ import annotations

import json
import os
import time

from experiments.paper._run import Run

RESULTS = "results.json"
KEY_FILE = "run_key.txt"  # the run_key of what a finished run directory computed


class StaleRunError(SystemExit):
    """A run directory holds results of another configuration than the table's run."""


def is_done(run: Run, rundir: str) -> bool:
    """Whether ``run`` already finished in ``rundir`` (its results.json exists).

    Raises:
      StaleRunError: the directory finished a different configuration (its ``run_key.txt``
        differs: the table's settings or the lr sweep changed since), so its results are
        not this run's; the message says to delete it.
    """
    need = [RESULTS] + (["angles.json"] if run.kind == "foa" else [])
    done = all(os.path.exists(os.path.join(rundir, f)) for f in need)
    key_path = os.path.join(rundir, KEY_FILE)
    if done and os.path.exists(key_path):
        with open(key_path) as f:
            stored = f.read().strip()
        if stored != run_key(run):
            raise StaleRunError(
                f"{rundir} holds a finished run of another configuration (run key {stored}, "
                f"the table now asks for {run_key(run)}: its settings or the lr sweep changed). "
                f"Delete that directory to train it again, or use a fresh --workdir.")
    return done


CELLS = "cells.json"  # <workdir>/cells.json: run key -> the run dir that computed it


def run_key(run: Run) -> str:
    """Identity of what a run computes: its kind, config and options (not its table or name).

    Two tables that ask for the same training (Table 5.3's BP ResNet-18 is Table 5.2's) get
    the same key; the second links to the first's directory instead of training again.
    """
    import hashlib

    config = run.config.to_json(sort_keys=True) if run.config is not None else ""
    blob = json.dumps([run.kind, config, run.options], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def link_shared(run: Run, rundir: str, workdir: str) -> str | None:
    """If another table already finished the same run, links ``rundir`` to it; returns its dir."""
    cells = load_json(os.path.join(workdir, CELLS))
    other = cells.get(run_key(run))
    if not other or os.path.abspath(other) == os.path.abspath(rundir) \
            or not is_done(run, other):
        return None
    if os.path.lexists(rundir):
        if os.path.islink(rundir):
            os.unlink(rundir)
        else:
            return None  # a partial run of its own: let it resume rather than discard it
    os.makedirs(os.path.dirname(rundir), exist_ok=True)
    os.symlink(os.path.relpath(other, os.path.dirname(rundir)), rundir)
    return other


def record_cell(run: Run, rundir: str, workdir: str) -> None:
    """Notes that ``rundir`` computed ``run`` (its key file, and the workdir's index)."""
    if not os.path.islink(rundir) and os.path.isdir(rundir):
        with open(os.path.join(rundir, KEY_FILE), "w") as f:
            f.write(run_key(run) + "\n")
    path = os.path.join(workdir, CELLS)
    cells = load_json(path)
    cells.setdefault(run_key(run), rundir)
    write_json(path, cells)


def finished_entry(run: Run, wall: float, version: str) -> dict:
    """A manifest's record of a run trained now: wall time, setup, when, and the commit."""
    return {"wall_time_s": wall, "setup": run.setup(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "code_version": version}


def write_json(path: str, obj: dict) -> None:
    """Writes ``obj`` to ``path`` atomically (a reader never sees half a file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def load_json(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}
