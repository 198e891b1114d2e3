"""Collect ``experiments.reproduce`` outputs into markdown beside the papers' numbers, and plots.

  python -m experiments.report --workdir=/tmp/repro [--out=docs/results]

For every table with a ``<workdir>/<table>/manifest.json`` (or the ``--tables`` given):
a markdown table (ours, the paper's, the difference ours − paper, in percentage points for
accuracies), an ordering check of the methods per row against the paper's (or the paper's
claim where it prints no numbers), and plots written to ``--out``: test accuracy per epoch
per rule, alignment angles, t-SNE panels, memory-access bars and the pipeline schedule.
Writes ``<out>/README.md``. Cells that are under-trained (test accuracy within a few points
of chance, still rising in the last epoch, or a single epoch) are marked in the table and
left out of the ordering check. The papers' claims (``experiments/paper/claims.py``) get a verdict
per check, "undecided" with its reason on such cells; "Where we disagree with the papers"
lists the checks that disagree; the machine section gives each run's commit. For runs with
no paper number (your own ``experiments.train`` runs) use
``python -m experiments.compare --workdirs=a,b,c``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from experiments.paper import _report_stats as stats
from experiments.paper import _explain, claims, paper_results, tables
from experiments.paper import _report_plots as plots
from experiments.paper import _report_sections as sections
from experiments.paper._report_runs import (MANIFEST, _table_runs, commits_text,
                                             experiment_text, manifest_reader)



_load, _fmt, _diff, _order = stats.load, stats.fmt, stats.diff, stats.order_keys


def _chain(values: dict[str, float], tol: float = 0.005) -> str:
    """``A > B = C``: methods by decreasing value, ``=`` where values tie within ``tol``."""
    keys = _order(values)
    out = keys[:1]
    for a, b in zip(keys, keys[1:]):
        out += ["=" if abs(values[a] - values[b]) <= tol else ">", b]
    return " ".join(out)


# Under-trained cells (shown, not ranked): ``_report_stats.under_trained``.
CHANCE_MARGIN, RISING = stats.CHANCE_MARGIN, stats.RISING
under_trained = stats.under_trained


def ordering_notes(ours: dict[str, dict[str, float]], paper: dict[tuple[str, str], float],
                   tol: float = 0.005, untrained: dict[tuple[str, str], str] | None = None,
                   stds: dict[tuple[str, str], float] | None = None) -> list[str]:
    """Per row, whether our ranking of methods (those with a paper number) matches the paper's.

    A pair disagrees when the paper ranks a above b and ours ranks b above a by more than
    ``tol`` points or, with ``stds`` ((row, method) -> std over seeds), by more than the
    combined std sqrt(std_a² + std_b²); closer pairs are reported as ties, not as
    disagreements. Cells in ``untrained`` ((row, method) -> reason, see
    :func:`under_trained`) are listed, not ranked.
    """
    notes = []
    untrained = untrained or {}
    stds = stds or {}

    def margin(row, a, b):
        return max(tol, (stds.get((row, a), 0.0) ** 2 + stds.get((row, b), 0.0) ** 2) ** 0.5)

    for row, vals in ours.items():
        skipped = [f"{m} ({untrained[(row, m)]})" for m in vals if (row, m) in untrained]
        if skipped:
            notes.append(f"- **{row}**: not ranked, under-trained: {'; '.join(skipped)}.")
        common = {m: v for m, v in vals.items() if (row, m) in paper and (row, m) not in untrained}
        if len(common) < 2:
            continue
        theirs = {m: paper[(row, m)] for m in common}
        flipped = [(a, b) for a in common for b in common
                   if theirs[a] > theirs[b] and common[b] - common[a] > margin(row, a, b)]
        ties = [(a, b) for a in common for b in common
                if a < b and abs(common[a] - common[b]) <= margin(row, a, b)]
        if flipped:
            pairs = ", ".join(f"{b} > {a}" for a, b in flipped)
            notes.append(f"- **{row}**: ordering differs — paper {_chain(theirs)}; "
                         f"ours {_chain(common)} (reversed: {pairs}).")
        elif ties:
            notes.append(f"- **{row}**: no reversal, but ties in ours — paper "
                         f"{_chain(theirs)}; ours {_chain(common)}.")
        else:
            notes.append(f"- **{row}**: same ordering as the paper ({_chain(common)}).")
    return notes


def _accuracy(table_id: str, workdir: str, manifest: dict, runs: list) -> list[str]:
    paper = paper_results.PAPER.get(table_id, {})
    lines = ["| row | method | ours: setup | ours (%): mean ± std | seeds | paper (%) "
             "| Δ ours − paper | wall per seed (s) | trained enough to rank? |",
             "|---|---|---|---|---|---|---|---|---|"]
    ours: dict[str, dict[str, float]] = {}
    untrained: dict[tuple[str, str], str] = {}
    cells = _cells(table_id, workdir, manifest, runs)
    for (row, col), cell in cells.items():
        why = None
        if cell.n:
            ours.setdefault(row, {})[col] = cell.mean
            why = stats.cell_under_trained(cell)  # the flag the claims use too
            if why:
                untrained[(row, col)] = why
        p = paper.get((row, col))
        verdict = "—" if not cell.n else (f"**no**: {why}" if why else "yes")
        lines.append(f"| {row} | {col} | {cell.setup} | {cell.text()} | {cell.n} | {_fmt(p)} "
                     f"| {_fmt(_diff(cell.mean, p))} | {stats.wall_text(cell)} | {verdict} |")
    std = {k: c.std for k, c in cells.items()}
    notes = ordering_notes(ours, paper, untrained=untrained, stds=std) if paper else [
        "- ours, per row (no paper numbers; under-trained cells left out; `=`: within the "
        "combined std of the seeds): " + "; ".join(
            f"{r}: {_chain_cells([c for (rr, m), c in cells.items() if rr == r and c.n and (r, m) not in untrained])}"
            for r in ours)]
    return lines + [""] + notes + _convergence(cells)


def _cells(table_id: str, workdir: str, manifest: dict, runs: list) -> dict:
    """``_report_stats.cells`` with each cell's number of classes (its chance level)."""
    cells = stats.cells(table_id, workdir, manifest, runs)
    n = _num_classes(runs[0]) if runs else 10
    for c in cells.values():
        c.num_classes = n
    return cells


def _chain_cells(items: list) -> str:
    """``A > B = C`` over cells by decreasing mean; ``=`` where within the combined std."""
    items = sorted(items, key=lambda c: -c.mean)
    out = [c.col for c in items[:1]]
    for a, b in zip(items, items[1:]):
        out += ["=" if stats.order(a, b) == "=" else ">", b.col]
    return " ".join(out)


def _convergence(cells: dict) -> list[str]:
    """BP's curve, mean over seeds: the points it gained over its last two epochs."""
    out = []
    for (row, col), cell in cells.items():
        if col not in ("BP",) or not cell.n:
            continue
        gain = stats.plateau_gain(cell)
        curve = cell.mean_curve()
        if gain is None:
            continue
        near = "within about a point of its plateau" if gain < 1.0 else "still rising"
        out.append(f"- BP convergence, {row}: {curve[-1][1]:.2f} % after {curve[-1][0]} epochs, "
                   f"{gain:+.2f} pt over the last 2 epochs ({near}; curve in the plot below).")
    return [""] + out if out else []


def _num_classes(run) -> int:
    from alearn.data import specs

    name = run.config.dataset if run.config is not None else ""
    return specs.SPECS[name].num_classes if name in specs.SPECS else 10


def render_table(table_id: str, workdir: str) -> str:
    """The markdown section of one table (no plots)."""
    scale, manifest, runs = _table_runs(table_id, workdir)
    t = tables.TABLES[table_id]
    head = [f"## `{table_id}` — {t.title}", "",
            f"Scale `{scale}`. Command: `{manifest.get('command', '(not run)')}`  ",
            f"Wall time of the runs: {_fmt(manifest.get('total_wall_time_s'), 0)} s "
            "(sum over runs, this machine).", ""]
    if t.note:
        head += [f"Note: {t.note}", ""]
    claim = paper_results.CLAIMS.get(table_id)
    if claim:
        head += [f"Paper's claim: {claim}", ""]
    body = {"accuracy": lambda: _accuracy(table_id, workdir, manifest, runs),
            "sweep": lambda: sections.sweep(table_id, workdir, runs),
            "metafeatures": lambda: sections.metafeatures(table_id, workdir, runs),
            "memory": lambda: sections.memory(table_id, workdir, runs),
            "pipeline": lambda: sections.pipeline(table_id, workdir, runs)}[t.metric]()
    return "\n".join(head + body) + "\n"


def write_report(workdir: str, out: str, table_ids: Sequence[str] | None = None,
                 preamble: str = "") -> str:
    """Renders every table found in ``workdir`` (or ``table_ids``) to ``<out>/README.md``."""
    os.makedirs(out, exist_ok=True)
    ids = table_ids or [t for t in tables.TABLE_IDS
                        if os.path.isdir(os.path.join(workdir, t))]
    parts = ["# alearn: reproduced tables", "", preamble] if preamble else \
        ["# alearn: reproduced tables", ""]
    sections, flagged = [], []
    for tid in ids:
        section = render_table(tid, workdir)
        flagged += [f"{line[:2]}`{tid}` {line[2:]}" for line in section.splitlines()
                    if "ordering differs" in line or "DISAGREES" in line]
        scale, _, runs = _table_runs(tid, workdir)
        pngs = plots.table_plots(tid, tables.TABLES[tid].metric, workdir, runs, out)
        section += "".join(f"\n![{os.path.basename(p)}]({os.path.relpath(p, out)})\n"
                           for p in pngs)
        sections.append(section)
    results = claim_results(workdir, ids)
    parts += claims_section(workdir, ids, results) + machine_section(workdir, ids)
    parts += disagreement_section(results, flagged, workdir)
    parts += sections
    walls = {tid: (_load(os.path.join(workdir, tid, MANIFEST)) or {}).get("runs", {})
             for tid in ids}
    with open(os.path.join(out, "walls.json"), "w") as f:  # experiments/paper/_estimate.py reads it
        json.dump({t: w for t, w in walls.items() if w}, f, indent=1, sort_keys=True)
    path = os.path.join(out, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def table_cells(table_id: str, workdir: str, metric: str = "accuracy") -> dict:
    """(row, method) -> ``_report_stats.Cell`` of a table in ``workdir`` ({} if not run)."""
    if not os.path.isdir(os.path.join(workdir, table_id)):
        return {}
    if metric == "ratio":
        _, _, runs = _table_runs(table_id, workdir)
        return sections.ratio_cells(table_id, workdir, runs)
    _, manifest, runs = _table_runs(table_id, workdir)
    return _cells(table_id, workdir, manifest, runs)


def claim_results(workdir: str, ids: Sequence[str]) -> list:
    """``claims.Result`` of every claim that the tables ``ids`` decide: a check on its own
    table when that is in ``ids``, else on the first of ``ids`` holding both its cells."""
    cache: dict = {}

    def cells_of(table_id, metric):
        key = (table_id, metric)
        if key not in cache:
            cache[key] = table_cells(table_id, workdir, metric) if table_id in ids else {}
        return cache[key]

    others = tuple(t for t in ids if tables.TABLES[t].metric == "accuracy")
    results = [claims.decide(claim, cells_of, others) for claim in claims.CLAIMS]
    return [r for r in results if r.items]


def claims_section(workdir: str, ids: Sequence[str], results: list | None = None) -> list[str]:
    """One heading per claim of ``experiments.paper.claims`` that ``ids`` decide, one line per check."""
    lines = ["## The papers' claims at this scale", "",
             "Verdicts use the seeds' spread: an ordering agrees or disagrees only when the "
             "means differ by more than the combined std sqrt(std_a² + std_b²); closer is a "
             "tie at this scale. A claim of equality (≈, within t points) agrees when "
             "|Δ| ≤ t, disagrees when |Δ| exceeds t by more than the combined std, else is "
             "borderline. A check is *undecided* when one of its cells is under-trained (the "
             "tables' flag: near chance, still rising ≥ 1 pt in its last epoch, or one "
             f"epoch) or its seeds spread more than {claims.SPREAD:g} pt (std). A claim's "
             "heading counts its checks' verdicts (experiments/paper/claims.py).", ""]
    for r in claim_results(workdir, ids) if results is None else results:
        lines.append(f"- **{r.claim.text}**: {r.heading}.")
        for i in r.items:
            lines.append(f"  - {i.line}")
            why = _explain.explain(i.check.explained_by, workdir)
            if why:
                lines.append(f"    - {why}")
    return lines + [""]


def disagreement_section(results: list, flagged: Sequence[str] = (), workdir: str = ""
                         ) -> list[str]:
    """Every claim check that disagrees (``claim_results``), then the rows with paper numbers
    whose ordering of methods differs (``flagged``, from the tables' sections)."""
    items = [(r.claim, i) for r in results for i in r.items]
    bad = [f"- **{c.text}** (`{i.table}`): {i.line}" + (
        f". {why[0].upper()}{why[1:]}" if (why := _explain.explain(i.check.explained_by, workdir))
        else "") for c, i in items if i.verdict == "disagrees"]
    n_undecided = sum(i.verdict == "undecided" for _, i in items)
    lines = ["## Where we disagree with the papers", ""]
    if bad:
        lines += bad
    elif items:
        lines.append(f"- no claim's check disagrees; {n_undecided} of {len(items)} "
                     f"{'is' if n_undecided == 1 else 'are'} undecided (listed with "
                     f"{'its reason' if n_undecided == 1 else 'their reasons'} under the claims "
                     "above)." if n_undecided else "- no claim's check disagrees.")
    else:
        lines.append("- no claim of the papers is decided by these tables.")
    if bad and n_undecided:
        lines.append(f"- and {n_undecided} of {len(items)} checks are undecided (under the "
                     "claims above, each with its reason).")
    if flagged:
        lines += ["", "Rows with the paper's numbers whose ordering of methods differs:", "",
                  *flagged]
    return lines + [""]


def machine_section(workdir: str, ids: Sequence[str]) -> list[str]:
    """The machine the runs were measured on and the total wall time of the runs."""
    from experiments import reproduce

    manifest = manifest_reader(workdir)
    total, machines, counted = 0.0, set(), set()
    for tid in ids:
        m = manifest(tid)
        for name, v in m.get("runs", {}).items():
            src = tuple(v["shared_with"].split("/", 1)) if v.get("shared_with") else (tid, name)
            if src in counted:
                continue  # a run shared between tables counts once, at the table that ran it
            counted.add(src)
            if src[0] not in ids:  # shared from outside the report (the ablation's runs)
                v = manifest(src[0]).get("runs", {}).get(src[1], {})
            total += v.get("wall_time_s", 0.0)
        machines.add(m.get("machine") or reproduce.machine())
    lines = ["## Machine and wall time", "",
             f"Runs measured on {'; '.join(sorted(machines))}; code version (git commit of "
             f"the runs, from the manifests): {commits_text(workdir, ids)}. The sum of every "
             f"run's wall time in these tables is {total / 60:.1f} min (each table's section "
             "gives each run's; a run shared between tables counts once).", ""]
    cited = sorted({c.explained_by for claim in claims.CLAIMS for c in claim.checks
                    if c.explained_by and c.table in ids})
    for exp in cited:  # the experiments behind the claims' measured causes, and their cost
        if text := experiment_text(workdir, exp, manifest):
            lines += [text, ""]
    return lines


def training_runs(workdir: str) -> list[str]:
    """``workdir`` itself or its sub-folders that hold an ``experiments.train`` run."""
    if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        return [workdir]
    if not os.path.isdir(workdir):
        return []
    return [os.path.join(workdir, d) for d in sorted(os.listdir(workdir))
            if os.path.exists(os.path.join(workdir, d, "metrics.jsonl"))]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__)
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", default="", help="output folder (default <workdir>/report)")
    p.add_argument("--tables", default="", help="comma-separated ids (default: all found)")
    p.add_argument("--preamble", default="", help="markdown file inserted after the title")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    a = p.parse_args(argv)
    ids = [t for t in a.tables.split(",") if t] or None
    bad = [t for t in ids or [] if t not in tables.TABLES]
    if bad:
        p.error(f"unknown table id(s) {', '.join(bad)}; valid ids: {', '.join(tables.TABLE_IDS)}")
    if not os.path.isdir(a.workdir):
        p.error(f"--workdir={a.workdir} is not a directory (the --workdir given to "
                "experiments.reproduce)")
    if a.preamble and not os.path.isfile(a.preamble):
        p.error(f"--preamble={a.preamble}: no such file")
    if not ids and not any(os.path.isdir(os.path.join(a.workdir, t)) for t in tables.TABLE_IDS):
        runs = training_runs(a.workdir)
        hint = (f"python -m experiments.compare --workdirs={','.join(runs)}" if runs else
                "python -m experiments.compare --workdirs=<run dir>,<run dir>,...")
        print(f"{a.workdir} holds no experiments.reproduce table (no folder named after a table "
              f"id: {', '.join(tables.TABLE_IDS)}), so there is no paper number to compare "
              f"with. To compare training runs with each other:\n  {hint}", file=sys.stderr)
        return 1
    from experiments import _cli
    _cli.quiet_logs()

    def run():
        pre = open(a.preamble).read() if a.preamble else ""
        print(write_report(a.workdir, a.out or os.path.join(a.workdir, "report"), ids, pre))
    return _cli.guard(run, a.verbose)


if __name__ == "__main__":
    sys.exit(main())
