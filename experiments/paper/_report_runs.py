"""Which runs a report reads, and the commits they were trained at (from the manifests).

Split from ``experiments/report.py``: the table's runs at its manifest's scale, and the
per-run code version the reproduce harness records (``code_version``).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from experiments.paper import _report_stats as stats
from experiments.paper import tables

MANIFEST = "manifest.json"
_load = stats.load


def _table_runs(table_id: str, workdir: str) -> tuple[str, dict, list]:
    from experiments.paper import _tables_cpu

    _tables_cpu.set_workdir(workdir, allow_pending=True)
    manifest = _load(os.path.join(workdir, table_id, MANIFEST)) or {}
    scale = manifest.get("scale", "cpu")
    return scale, manifest, tables.runs(table_id, scale)


def manifest_reader(workdir: str) -> Callable[[str], dict]:
    """``read(table) -> its manifest`` ({} without one), each file read once."""
    manifests: dict[str, dict] = {}

    def read(tid: str) -> dict:
        if tid not in manifests:
            manifests[tid] = _load(os.path.join(workdir, tid, MANIFEST)) or {}
        return manifests[tid]

    return read


def _plural(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def run_commits(workdir: str, ids: Sequence[str]) -> dict[tuple[str, str], tuple[str, str]]:
    """(table, run) -> (commit, how) for every finished run of ``ids``; a run shared from
    another table is that table's run, counted once. ``how``: "run" (recorded per run by
    ``experiments.reproduce``), "table" (only the table's, i.e. its last command's: manifests
    from before the per-run record) or "none"."""
    manifest = manifest_reader(workdir)
    out = {}
    for tid in ids:
        if not os.path.isdir(os.path.join(workdir, tid)):
            continue
        _, _, runs = _table_runs(tid, workdir)
        for run in runs:
            if not os.path.exists(os.path.join(workdir, tid, run.name, "results.json")):
                continue
            key, entry = (tid, run.name), manifest(tid).get("runs", {}).get(run.name, {})
            if entry.get("shared_with"):
                key = tuple(entry["shared_with"].split("/", 1))
                entry = manifest(key[0]).get("runs", {}).get(key[1], {})
            if entry.get("code_version"):
                out[key] = (entry["code_version"], "run")
            elif manifest(key[0]).get("code_version"):
                out[key] = (manifest(key[0])["code_version"], "table")
            else:
                out[key] = ("", "none")
    return out


def commits_text(workdir: str, ids: Sequence[str]) -> str:
    """"abc1234 (40 runs), def5678+dirty (2 runs)"; runs without a commit of their own said so."""
    counts: dict[tuple[str, str], int] = {}
    missing: dict[str, int] = {}
    for (tid, _), (commit, how) in run_commits(workdir, ids).items():
        if how == "none":
            missing[tid] = missing.get(tid, 0) + 1
        else:
            counts[(commit, how)] = counts.get((commit, how), 0) + 1

    table_only = "; the commit of the table's last command, not recorded per run"
    parts = [f"{c} ({_plural(n)}{table_only if how == 'table' else ''})"
             for (c, how), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    if missing:
        parts.append(f"not recorded for {_plural(sum(missing.values()))} ({', '.join(missing)})")
    return ", ".join(parts) or "no finished run"


def experiment_text(workdir: str, name: str, read: Callable[[str], dict] | None = None) -> str:
    """One sentence on an experiment outside the tables (its folder's manifest: the AlexNet
    ablation): its command, runs, summed wall time and commits; "" when it has no runs."""
    m = (read or manifest_reader(workdir))(name)
    runs = m.get("runs", {})
    if not runs:
        return ""
    counts: dict[str, int] = {}
    for v in runs.values():
        c = v.get("code_version") or "not recorded"
        counts[c] = counts.get(c, 0) + 1
    commits = ", ".join(f"{c} ({_plural(n)})"
                        for c, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    wall = sum(v.get("wall_time_s", 0.0) for v in runs.values()) / 60
    return (f"The experiment behind a cause the claims cite, `{name}` "
            f"(`{m.get('command', '')}`): {len(runs)} runs, {wall:.1f} min of wall time in "
            f"all, code version {commits}.")
