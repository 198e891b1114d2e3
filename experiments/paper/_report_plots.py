"""Plots of ``experiments.report``: small PNGs from what the runs already wrote.

- accuracy curves: test accuracy per epoch of every run (``metrics.jsonl``), one panel per row;
- alignment: mean update-vs-BP angle per epoch (the trainer's alignment log) per run;
- Fig. 3.2: the FoA W-vs-C angle per layer (``angles.json``);
- t-SNE: the panels ``al_compare`` runs wrote (``tsne.png``), downscaled;
- memory: ``alearn.analysis.memory.plot_access`` from the memory run's results;
- pipeline: a stage x tick chart of the ideal schedule, coloured by micro-batch.
"""

from __future__ import annotations

import json
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Readable at 100 % zoom in a markdown viewer: 100 dpi, 11-12 pt text (the legend 10 pt).
_DPI = 100
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
                     "legend.fontsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10})


def _jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _histories(workdir: str, tid: str, run) -> list[tuple[str, list[dict]]]:
    base = os.path.join(workdir, tid, run.name)
    if run.kind == "al_compare":
        return [(f"{run.row} {m.upper()}", _jsonl(os.path.join(base, m, "metrics.jsonl")))
                for m in ("bp", "al")]
    return [(run.col, _jsonl(os.path.join(base, "metrics.jsonl")))]


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def curves(tid: str, workdir: str, runs: list, out: str) -> list[str]:
    """Test accuracy per epoch, one panel per row: the mean over seeds, a ±std band."""
    rows: dict[str, dict[str, list]] = {}
    for run in runs:
        for label, hist in _histories(workdir, tid, run):
            if hist:
                rows.setdefault(run.row, {}).setdefault(label, []).append(hist)
    if not rows:
        return []
    fig, axes = plt.subplots(1, len(rows), figsize=(4.8 * len(rows), 3.8), squeeze=False)
    for ax, (row, items) in zip(axes[0], rows.items()):
        for label, hists in items.items():
            by_epoch: dict[int, list[float]] = {}
            for hist in hists:
                for r in hist:
                    if isinstance(r.get("test_accuracy"), (int, float)):
                        by_epoch.setdefault(int(r["epoch"]), []).append(100 * r["test_accuracy"])
            epochs = sorted(by_epoch)
            mean = [float(np.mean(by_epoch[e])) for e in epochs]
            std = [float(np.std(by_epoch[e], ddof=1)) if len(by_epoch[e]) > 1 else 0.0
                   for e in epochs]
            n = max(len(v) for v in by_epoch.values())
            line, = ax.plot(epochs, mean, marker="o", label=label + (f" ({n} seeds)" if n > 1
                                                                     else ""))
            if n > 1:
                ax.fill_between(epochs, np.subtract(mean, std), np.add(mean, std),
                                color=line.get_color(), alpha=0.2)
        ax.set_title(row)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.legend()
        ax.grid(alpha=0.3)
    return [_save(fig, os.path.join(out, f"{tid}_curves.png"))]


def alignment(tid: str, workdir: str, runs: list, out: str) -> list[str]:
    series = []
    for run in runs:
        for label, hist in _histories(workdir, tid, run):
            pts = [(r["epoch"], sum(v for k, v in r.items() if k.startswith("update_vs_bp/"))
                    / n) for r in hist
                   if (n := sum(k.startswith("update_vs_bp/") for k in r))]
            if pts:
                series.append((f"{run.row}: {label}", pts))
    if not series:
        return []
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, pts in series:
        ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean angle update vs BP (deg)")
    ax.legend()
    ax.grid(alpha=0.3)
    return [_save(fig, os.path.join(out, f"{tid}_alignment.png"))]


def foa_angles(tid: str, workdir: str, runs: list, out: str) -> list[str]:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    any_ = False
    for run in runs:
        path = os.path.join(workdir, tid, run.name, "angles.json")
        if run.kind != "foa" or not os.path.exists(path):
            continue
        with open(path) as f:
            hist = json.load(f)
        for layer in [k for k in hist[0] if k != "epoch"]:
            ax.plot([h["epoch"] for h in hist], [h[layer] for h in hist],
                    label=f"{run.row.split(' / ')[-1]}: {layer}")
            any_ = True
    if not any_:
        plt.close(fig)
        return []
    ax.set_xlabel("epoch")
    ax.set_ylabel("angle W vs C (deg)")
    ax.set_title("Fig. 3.2: Forward Alignment, W vs fixed C")
    ax.legend()
    ax.grid(alpha=0.3)
    return [_save(fig, os.path.join(out, f"{tid}_fig3.2_angles.png"))]


def tsne_panels(tid: str, workdir: str, runs: list, out: str) -> list[str]:
    from PIL import Image

    paths = []
    for run in runs:
        src = os.path.join(workdir, tid, run.name, "tsne.png")
        if os.path.exists(src):
            img = Image.open(src).convert("RGB")
            img.thumbnail((900, 900))
            dst = os.path.join(out, f"{tid}_{run.name}_tsne.png")
            img.quantize(colors=64).save(dst, optimize=True)
            paths.append(dst)
    return paths


def memory_bars(tid: str, workdir: str, runs: list, out: str) -> list[str]:
    from alearn.analysis import memory

    paths = []
    for run in runs:
        path = os.path.join(workdir, tid, run.name, "results.json")
        if os.path.exists(path):
            with open(path) as f:
                res = json.load(f)
            # a k the model cannot use (AlexNet k=4) has no access figures: the table says so
            access = {m: {r: v["access"] for r, v in per.items() if "access" in v}
                      for m, per in res["models"].items()}
            dst = os.path.join(out, f"{tid}_access.png")
            memory.plot_access(access, dst)
            paths.append(dst)
    return paths


def pipeline_chart(tid: str, workdir: str, runs: list, out: str) -> list[str]:
    paths = []
    for run in runs:
        path = os.path.join(workdir, tid, run.name, "results.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            res = json.load(f)
        n, stages = min(res["micro_batches"], 12), res["blocks"]
        fig, ax = plt.subplots(figsize=(9, 0.5 * stages + 1.6))
        cmap = plt.get_cmap("tab20")
        for s in range(stages):
            for m in range(n):  # stage s trains micro-batch m at tick m + s
                ax.barh(s, 1, left=m + s, color=cmap(m % 20), edgecolor="white")
                ax.text(m + s + 0.5, s, str(m), ha="center", va="center", fontsize=9)
        ax.set_yticks(range(stages), [f"stage {s}" for s in range(stages)])
        ax.invert_yaxis()
        ax.set_xlabel(f"tick ({n} micro-batches, {n + stages - 1} ticks; sequential AL: "
                      f"{n * stages} block steps)")
        ax.set_title("AL pipeline schedule: stage s runs micro-batch t - s at tick t")
        paths.append(_save(fig, os.path.join(out, f"{tid}_schedule.png")))
    return paths


def table_plots(tid: str, metric: str, workdir: str, runs: list, out: str) -> list[str]:
    """Every plot of one table, written to ``out``; returns their paths."""
    os.makedirs(out, exist_ok=True)
    if metric == "memory":
        return memory_bars(tid, workdir, runs, out)
    if metric == "pipeline":
        return pipeline_chart(tid, workdir, runs, out)
    if metric == "sweep":
        return curves(tid, workdir, runs, out)
    paths = curves(tid, workdir, runs, out) + alignment(tid, workdir, runs, out)
    paths += foa_angles(tid, workdir, runs, out)
    if metric == "metafeatures":
        paths += tsne_panels(tid, workdir, runs, out)
    return paths
