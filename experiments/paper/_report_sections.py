"""The report's sections for the non-accuracy tables: al3.4's metafeature distances, the lr
sweep, Ch. 6's memory accesses and the AL pipeline schedule (``experiments.report`` renders
the accuracy tables and puts these together)."""

from __future__ import annotations

import os

from experiments.paper import _report_stats as stats
from experiments.paper import paper_results


def _ratios(table_id: str, workdir: str, runs: list) -> dict[tuple[str, str], dict]:
    """(row, "AL"/"BP") -> {"acc": [...], "inter": [...], "intra": [...], "ratio": [...]}
    over the seeds of al_compare runs (last prediction-path layer)."""
    out: dict[tuple[str, str], dict] = {}
    for run in runs:
        res = stats.load(os.path.join(workdir, table_id, run.name, "results.json"))
        if res is None:
            continue
        for m in ("BP", "AL"):
            q = res.get("metafeatures", {}).get(f"{m} layer{res.get('last_layer')}") or {}
            d = out.setdefault((run.row, m), {"acc": [], "inter": [], "intra": [], "ratio": [],
                                              "setup": run.setup()})
            acc = res.get("test_accuracy", {}).get(m.lower())
            if acc is not None:
                d["acc"].append(100 * acc)
            for k in ("inter", "intra", "ratio"):
                if q.get(k) is not None:
                    d[k].append(q[k])
    return out


def ratio_cells(table_id: str, workdir: str, runs: list) -> dict:
    """al3.4's ratios as ``_report_stats.Cell`` objects (for the claims)."""
    return {k: stats.Cell(k[0], k[1], v["setup"], accs=list(v["ratio"]))
            for k, v in _ratios(table_id, workdir, runs).items()}


def _mstd(values: list[float], digits: int = 2) -> str:
    c = stats.Cell("", "", "", accs=list(values))
    return c.text(digits)


def metafeatures(table_id: str, workdir: str, runs: list) -> list[str]:
    paper = paper_results.PAPER[table_id]
    lines = ["| row | method | ours: setup | test acc (%) | inter | intra | ratio | seeds "
             "| paper inter | paper intra | paper ratio | Δ ratio |", "|---" * 12 + "|"]
    cells = _ratios(table_id, workdir, runs)
    for (row, m), d in cells.items():
        pr = paper.get((row, f"{m} ratio"))
        mean_ratio = sum(d["ratio"]) / len(d["ratio"]) if d["ratio"] else None
        lines.append(
            f"| {row} | {m} | {d['setup']} (last layer) | {_mstd(d['acc'])} | "
            f"{_mstd(d['inter'])} | {_mstd(d['intra'])} | {_mstd(d['ratio'])} | "
            f"{len(d['ratio'])} | {stats.fmt(paper.get((row, f'{m} inter')))} | "
            f"{stats.fmt(paper.get((row, f'{m} intra')))} | {stats.fmt(pr)} | "
            f"{stats.fmt(stats.diff(mean_ratio, pr))} |")
    notes = []
    for row in dict.fromkeys(r for r, _ in cells):
        al, bp = (stats.Cell(row, m, "", accs=list(cells.get((row, m), {}).get("ratio", [])))
                  for m in ("AL", "BP"))
        if al.n and bp.n:
            o = stats.order(al, bp)
            verdict = {">": "agrees", "<": "DISAGREES", "=": "tie at this scale"}[o]
            notes.append(f"- **{row}**: AL ratio {al.text()} vs BP {bp.text()} — {verdict} "
                         "with the paper's claim (AL > BP).")
    return lines + [""] + notes


def sweep(table_id: str, workdir: str, runs: list) -> list[str]:
    """The lr sweep: held-out accuracy per factor, and the factor each family uses."""
    from experiments.paper import _tables_cpu as cs

    lines = ["| family | method | factor | lr | held-out accuracy (%) | chosen |",
             "|---|---|---|---|---|---|"]
    for family, method in cs.SWEPT:
        res = cs.sweep_results(family, method, workdir)
        best = None if None in res.values() else cs.best_factor(res)
        for x, acc in res.items():
            run = next((r for r in runs if r.name == cs.sweep_name(family, method, x) + "_s0"),
                       None)
            lr = None if run is None else float(run.config.learning_rate)
            lines.append(f"| {family} | {method.upper()} | x{x:.3g} | "
                         f"{'—' if lr is None else f'{lr:.3g}'} "
                         f"| {stats.fmt(None if acc is None else 100 * acc)} | "
                         f"{'**yes**' if x == best else ''} |")
    return lines


def memory(table_id: str, workdir: str, runs: list) -> list[str]:
    lines = ["| model | rule | params | saved activations | accesses (M) | accesses / BP "
             "| XLA step temp (MB) | temp / BP |", "|---|---|---|---|---|---|---|---|"]
    notes = []
    for run in runs:
        res = stats.load(os.path.join(workdir, table_id, run.name, "results.json")) or {}
        for model, per_rule in res.get("models", {}).items():
            bp = per_rule["BP"]
            totals = {}
            skipped = []
            for rule, r in per_rule.items():
                if "not_applicable" in r:  # a k the model cannot use (e.g. AlexNet k=4)
                    skipped.append(rule)
                    lines.append(f"| {model} | {rule} | {r['params']:,} | not applicable "
                                 "| — | — | — | — |")
                    continue
                tot = r["access"]["total"]
                totals[rule] = tot
                temp = r.get("compiled_step", {}).get("temp")
                bp_temp = bp.get("compiled_step", {}).get("temp")
                lines.append(f"| {model} | {rule} | {r['params']:,} | {r['saved_activations']:,} "
                             f"| {tot / 1e6:.2f} | {tot / bp['access']['total']:.3f} | "
                             f"{stats.fmt(None if temp is None else temp / 1e6, 1)} | "
                             f"{stats.fmt(temp / bp_temp if temp and bp_temp else None, 3)} |")
            order = stats.order_keys(totals)
            claim = [k for k in ("BP", "ASAP k=2", "ASAP k=4") if k not in skipped]
            verdict = "agrees" if order == claim else "DISAGREES"
            notes.append(f"- **{model}**: accesses {' > '.join(order)} — {verdict} with the "
                         "paper's claim (BP > ASAP k=2 > ASAP k=4)"
                         + (f"; {', '.join(skipped)} cannot apply to it (its layers group "
                            "as a smaller k)" if skipped else "") + ".")
    return lines + [""] + notes


def pipeline(table_id: str, workdir: str, runs: list) -> list[str]:
    lines = []
    for run in runs:
        res = stats.load(os.path.join(workdir, table_id, run.name, "results.json"))
        if res is None:
            lines.append(f"- {run.name}: not run yet")
            continue
        t, f = res["modelled_time"], res["modelled_flops"]
        lines += [f"{run.row}: {res['blocks']} stages, n = {res['micro_batches']} micro-batches "
                  f"of {res['micro_batch']} on `{res['device']}`.", "",
                  "| quantity | value |", "|---|---|",
                  f"| ticks (n + N − 1) | {res['schedule']['ticks']} |",
                  f"| utilisation | {res['schedule']['utilisation']:.3f} |",
                  f"| MODELLED speedup over sequential AL (measured block times) | "
                  f"{t['speedup_vs_sequential_al']:.2f}x |",
                  f"| MODELLED speedup over sequential AL (XLA flops) | "
                  f"{f['speedup_vs_sequential_al']:.2f}x |",
                  f"| MODELLED speedup over BP (measured times / flops) | "
                  f"{t.get('speedup_vs_bp', float('nan')):.2f}x / "
                  f"{f.get('speedup_vs_bp', float('nan')):.2f}x |", "",
                  "```", res["report"], "```"]
    return lines
