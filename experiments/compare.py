"""Compare any set of training runs: one figure and one markdown table.

  python -m experiments.compare --workdirs=/tmp/bp,/tmp/fa,/tmp/dfa [--out=/tmp/compare]
      [--labels=BP,FA,DFA]

Reads what every run of ``experiments.train`` (or ``experiments.reproduce``) wrote to its
workdir -- ``metrics.jsonl`` (one record per epoch) and, once finished, ``results.json`` --
and writes to ``--out`` (default ``./compare``):

- ``compare.png``: test and train accuracy and loss per epoch, one line per run, and, where a
  run logged them (``--config.alignment=True``), the angle between each rule's update and the
  BP gradient and the feedback-vs-forward (B vs W) angle, averaged over layers (layers at 0
  throughout, such as the output layer whose update is BP's under every rule, left out);
- ``compare.md``: per run the final and best test accuracy, final train accuracy, training
  throughput (samples/s, compile time excluded) and wall time, plus whether it finished.

An unfinished run (no ``results.json``) is shown with what its ``metrics.jsonl`` holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

UPDATE, FEEDBACK = "update_vs_bp/", "b_vs_w/"
FONT = 12  # readable at 100 % zoom next to the README's text


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_run(workdir: str, label: str = "") -> dict:
    """``{"label", "workdir", "history", "results"}`` of one run; fails naming the workdir."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{workdir!r} holds no metrics.jsonl: not a training workdir (pass the --workdir of "
            "an experiments.train run, e.g. --workdirs=/tmp/bp,/tmp/fa)")
    with open(path) as f:
        history = [json.loads(line) for line in f if line.strip()]
    results = _read_json(os.path.join(workdir, "results.json"))
    if not label:
        label = os.path.basename(os.path.normpath(workdir))
    return {"label": label, "workdir": workdir, "history": history, "results": results}


def _mean_angle(record: dict, prefix: str, skip: frozenset = frozenset()) -> float | None:
    vals = [v for k, v in record.items()
            if k.startswith(prefix) and k not in skip and isinstance(v, (int, float))]
    return sum(vals) / len(vals) if vals else None


def _always_zero(history: list[dict], prefix: str) -> frozenset:
    """Layers whose angle is 0 in every record (the output layer's update is BP's under every
    rule), left out of the mean unless every layer is (BP itself)."""
    keys = {k for r in history for k in r if k.startswith(prefix)}
    zero = {k for k in keys if all(abs(r.get(k, 0.0)) < 1e-3 for r in history)}
    return frozenset(zero) if zero != keys else frozenset()


def _fmt(v, spec: str = ".2f", scale: float = 1.0) -> str:
    return "—" if v is None else format(scale * v, spec)


def table(runs: Sequence[dict]) -> str:
    """The markdown table: one row per run."""
    lines = ["| run | rule | model | dataset | epochs | test acc final (%) | test acc best (%) "
             "| train acc final (%) | samples/s | wall time (s) | finished |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        hist, res = run["history"], run["results"] or {}
        last = hist[-1] if hist else {}
        tests = [r["test_accuracy"] for r in hist if isinstance(r.get("test_accuracy"), float)]
        best = max(tests, default=None)
        best_ep = next((r["epoch"] for r in hist if r.get("test_accuracy") == best), None)
        cfg = res.get("config", {})
        wall = res.get("wall_time_s")
        if wall is None and hist:  # unfinished: the training epochs' own time so far
            wall = sum(r.get("epoch_time_s", 0.0) for r in hist)
        lines.append(
            f"| {run['label']} | {res.get('rule', cfg.get('rule', '?'))} "
            f"| {res.get('model', cfg.get('model', '?'))} "
            f"| {res.get('dataset', cfg.get('dataset', '?'))} | {last.get('epoch', 0)} "
            f"| {_fmt(last.get('test_accuracy'), scale=100)} "
            f"| {_fmt(best, scale=100)}{f' (ep {best_ep})' if best_ep else ''} "
            f"| {_fmt(last.get('train_accuracy'), scale=100)} "
            f"| {_fmt(res.get('train_samples_per_second'), '.0f')} | {_fmt(wall, '.0f')} "
            f"| {'yes' if run['results'] else 'no (partial)'} |")
    return "\n".join(lines) + "\n"


def figure(runs: Sequence[dict], path: str) -> str:
    """Accuracy and loss (test and train) per epoch, plus alignment panels where logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [("test_accuracy", "test accuracy (%)", 100), ("train_accuracy",
                                                           "train accuracy (%)", 100),
              ("test_loss", "test loss", 1), ("train_loss", "train loss", 1)]
    angle_panels = [(p, t) for p, t in ((UPDATE, "update vs BP gradient (deg)"),
                                        (FEEDBACK, "feedback B vs W (deg)"))
                    if any(_mean_angle(r, p) is not None for run in runs for r in run["history"])]
    n = len(panels) + len(angle_panels)
    cols = 3 if n > 4 else 2
    rows = -(-n // cols)
    with plt.rc_context({"font.size": FONT, "axes.titlesize": FONT + 1,
                         "legend.fontsize": FONT - 1}):
        fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
        flat = list(axes.flat)
        colors = plt.get_cmap("tab10")
        for ax, (key, title, scale) in zip(flat, panels):
            for i, run in enumerate(runs):
                pts = [(r["epoch"], scale * r[key]) for r in run["history"]
                       if isinstance(r.get(key), (int, float))]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=4, color=colors(i % 10),
                            label=run["label"])
            ax.set_title(title)
        for ax, (prefix, title) in zip(flat[len(panels):], angle_panels):
            for i, run in enumerate(runs):
                skip = _always_zero(run["history"], prefix)
                pts = [(r["epoch"], a) for r in run["history"]
                       if (a := _mean_angle(r, prefix, skip)) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=4, color=colors(i % 10),
                            label=run["label"])
            ax.set_ylim(bottom=0)
            ax.set_title(title)
        for ax in flat[:n]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        for ax in flat[n:]:
            ax.set_visible(False)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path


def compare(workdirs: Sequence[str], out: str, labels: Sequence[str] = ()) -> tuple[str, str]:
    """Writes ``<out>/compare.png`` and ``<out>/compare.md``; returns their paths."""
    if not workdirs:
        raise ValueError("compare needs at least one workdir")
    if labels and len(labels) != len(workdirs):
        raise ValueError(f"{len(labels)} labels for {len(workdirs)} workdirs: give one per run")
    runs = [load_run(w, labels[i] if labels else "") for i, w in enumerate(workdirs)]
    os.makedirs(out, exist_ok=True)
    png = figure(runs, os.path.join(out, "compare.png"))
    md = os.path.join(out, "compare.md")
    with open(md, "w") as f:
        f.write("# Run comparison\n\n" + table(runs) + f"\n![compare.png](compare.png)\n")
    return png, md


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.compare",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--workdirs", required=True, help="comma-separated run workdirs")
    p.add_argument("--out", default="compare", help="output folder (default ./compare)")
    p.add_argument("--labels", default="", help="comma-separated names (default: folder names)")
    a = p.parse_args(argv)
    workdirs = [w for w in a.workdirs.split(",") if w]
    labels = [s for s in a.labels.split(",") if s]
    try:
        png, md = compare(workdirs, a.out, labels)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    with open(md) as f:
        print(f.read())
    print(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
