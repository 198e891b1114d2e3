"""Cells of a reproduced table: each (row, method) over its seeds, as mean ± std.

A table run by ``experiments.reproduce`` has one directory per (cell, seed)
(``<cell>_s<seed>``, ``tables.with_seeds``); ``cells`` gathers them. Two cells are
*ordered* only when their means differ by more than their combined standard deviation
sqrt(std_a² + std_b²) (sample std over seeds); closer than that they are a tie at this scale.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics


@dataclasses.dataclass
class Cell:
    """One table cell: a (row, method) over its seeds; accuracies in percent."""

    row: str
    col: str
    setup: str
    accs: list[float] = dataclasses.field(default_factory=list)
    walls: list[float] = dataclasses.field(default_factory=list)
    histories: list[list[dict]] = dataclasses.field(default_factory=list)
    seeds: list[int] = dataclasses.field(default_factory=list)
    shared: list[str] = dataclasses.field(default_factory=list)  # runs reused from other tables
    num_classes: int = 10  # of its dataset: chance for :func:`cell_under_trained`

    @property
    def n(self) -> int:
        return len(self.accs)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.accs) if self.accs else None

    @property
    def std(self) -> float:
        return statistics.stdev(self.accs) if len(self.accs) > 1 else 0.0

    def text(self, digits: int = 2) -> str:
        if not self.accs:
            return "—"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def mean_curve(self) -> list[tuple[int, float, float]]:
        """(epoch, mean, std) of test accuracy (%) over the seeds that logged each epoch."""
        by_epoch: dict[int, list[float]] = {}
        for hist in self.histories:
            for r in hist:
                if isinstance(r.get("test_accuracy"), (int, float)):
                    by_epoch.setdefault(int(r["epoch"]), []).append(100.0 * r["test_accuracy"])
        return [(e, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
                for e, v in sorted(by_epoch.items())]


# A cell is under-trained (shown, not ranked) when its test accuracy is within CHANCE_MARGIN
# points of chance, its last epoch still gained RISING points or more, or it ran one epoch.
CHANCE_MARGIN = 5.0
RISING = 1.0


def under_trained(history: list[dict], num_classes: int, chance_ok: bool = False) -> str | None:
    """Why a run's accuracy cannot be ranked yet (None: it can, or there is no curve).

    ``chance_ok``: accuracy at chance is the expected outcome (a claim that this run fails),
    so only a curve still rising, or a single epoch, counts.
    """
    accs = [100.0 * r["test_accuracy"] for r in history
            if isinstance(r.get("test_accuracy"), (int, float))]
    if not accs:
        return None
    chance = 100.0 / num_classes
    if not chance_ok and accs[-1] - chance < CHANCE_MARGIN:
        return f"near chance ({chance:.0f} %)"
    if len(accs) == 1:
        return "1 epoch, no curve to judge"
    if accs[-1] - accs[-2] >= RISING:
        return f"still rising (+{accs[-1] - accs[-2]:.1f} in the last epoch)"
    return None



def load(path: str) -> dict | None:
    """A JSON file's contents, or None when it does not exist."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def _jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def cells(table_id: str, workdir: str, manifest: dict, runs: list) -> dict[tuple[str, str], Cell]:
    """(row, method) -> Cell, in the table's order; runs without results are left out."""
    out: dict[tuple[str, str], Cell] = {}
    for run in runs:
        rundir = os.path.join(workdir, table_id, run.name)
        cell = out.setdefault((run.row, run.col), Cell(run.row, run.col, run.setup()))
        res = load(os.path.join(rundir, "results.json"))
        acc = None if res is None else res.get("test_accuracy")
        if not isinstance(acc, (int, float)):
            continue
        cell.accs.append(100.0 * float(acc))
        cell.seeds.append(run.seed if run.seed is not None else 0)
        entry = manifest.get("runs", {}).get(run.name, {})
        cell.walls.append(float(entry.get("wall_time_s", float("nan"))))
        if entry.get("shared_with"):
            cell.shared.append(entry["shared_with"])
        cell.histories.append(_jsonl(os.path.join(rundir, "metrics.jsonl")))
    return out


def fmt(v, digits: int = 2) -> str:
    """``v`` with ``digits`` decimals; "—" for None."""
    return "—" if v is None else f"{v:.{digits}f}"


def diff(ours, paper) -> float | None:
    return None if ours is None or paper is None else ours - paper


def order_keys(values: dict[str, float]) -> list[str]:
    """Keys by decreasing value."""
    return sorted(values, key=lambda k: -values[k])


def combined_std(a: Cell, b: Cell) -> float:
    return math.sqrt(a.std ** 2 + b.std ** 2)


def order(a: Cell, b: Cell) -> str:
    """'>' / '<' when a's mean is above / below b's by more than the combined std, else '='."""
    d, s = a.mean - b.mean, combined_std(a, b)
    return ">" if d > s else "<" if d < -s else "="


def wall_text(cell: Cell) -> str:
    """Each seed's wall time ('62/60/61'); a run shared from another table shows 'shared'."""
    parts = []
    for w in cell.walls:
        parts.append("shared" if w == 0.0 and cell.shared else
                     "—" if math.isnan(w) else f"{w:.0f}")
    return "/".join(parts) or "—"


def cell_under_trained(cell: Cell, num_classes: int | None = None,
                       chance_ok: bool = False) -> str | None:
    """:func:`under_trained` of the cell's mean curve over its seeds (chance: 100 % over
    ``num_classes``, default the cell's own). The report's table and the claims both use it."""
    curve = [{"epoch": e, "test_accuracy": m / 100.0} for e, m, _ in cell.mean_curve()]
    return under_trained(curve, num_classes or cell.num_classes, chance_ok)


def plateau_gain(cell: Cell, last: int = 2) -> float | None:
    """Points the mean curve gained over its last ``last`` epochs (None: too short)."""
    curve = cell.mean_curve()
    if len(curve) <= last:
        return None
    return curve[-1][1] - curve[-1 - last][1]


FELL = 5.0  # points below a seed's own best epoch at the end: that seed's training fell back
SWING = 10.0  # points lost between two epochs mid-run: that seed's training swung


def _seed_curve(hist: list[dict]) -> list[tuple[int, float, float | None]]:
    """(epoch, test accuracy %, train loss) per logged epoch of one seed."""
    out = []
    for r in hist:
        if isinstance(r.get("test_accuracy"), (int, float)):
            loss = r.get("train_loss")
            out.append((int(r["epoch"]), 100.0 * r["test_accuracy"],
                        float(loss) if isinstance(loss, (int, float)) else None))
    return out


def _seed_story(seed: int, acc: float, hist: list[dict]) -> str:
    """What one seed's curve did: diverged (non-finite loss), ended below its best epoch,
    or swung (lost ``SWING`` points mid-run, then recovered); '' when it did none of these."""
    curve = _seed_curve(hist)
    if not curve:
        return ""
    bad = next((e for e, _, loss in curve if loss is not None and not math.isfinite(loss)), None)
    if bad is not None:
        return f"seed {seed} diverged (train loss not finite from epoch {bad})"
    best_e, best = max(((e, a) for e, a, _ in curve), key=lambda t: t[1])
    if best - acc > FELL:
        return f"seed {seed} fell from {best:.1f} % (epoch {best_e}) to {acc:.1f} %"
    peak, drop = (curve[0][0], curve[0][1]), (0.0, None)  # the largest fall from a running peak
    for e, a, _ in curve[1:]:
        if peak[1] - a > drop[0]:
            drop = (peak[1] - a, (peak, (e, a)))
        if a > peak[1]:
            peak = (e, a)
    if drop[0] > SWING:
        (pe, pa), (te, ta) = drop[1]
        return (f"seed {seed} swung from {pa:.1f} % (epoch {pe}) to {ta:.1f} % (epoch {te}) "
                f"before ending at {acc:.1f} %")
    return ""


def spread_cause(cell: Cell) -> str:
    """Why a cell's seeds spread, from its seeds' own curves: one seed far from the others
    (and what its curve did), or seeds that diverged, fell back or swung (training unstable
    at this lr), or seeds plateauing at different accuracies (none did)."""
    if cell.n < 2:
        return ""
    seeds = cell.seeds if len(cell.seeds) == cell.n else list(range(cell.n))
    hists = cell.histories if len(cell.histories) == cell.n else [[]] * cell.n
    stories = [_seed_story(s, a, h) for s, a, h in zip(seeds, cell.accs, hists)]
    unsteady = [t for t in stories if t]
    steady = [str(k) for k, t in zip(seeds, stories) if not t]
    outlier = None
    if cell.n >= 3:  # one outlier: the others agree within a point, it is 3 of their stds off
        i = max(range(cell.n), key=lambda k: abs(cell.accs[k] - statistics.median(cell.accs)))
        rest = cell.accs[:i] + cell.accs[i + 1:]
        sd = statistics.stdev(rest) if len(rest) > 1 else 0.0
        if sd <= 1.0 and abs(cell.accs[i] - statistics.fmean(rest)) > 3 * max(sd, 0.5):
            outlier = (i, statistics.fmean(rest), sd)
    if outlier and stories[outlier[0]]:  # the outlier's own curve says what happened
        i, mean, sd = outlier
        return f"one seed is the outlier: {stories[i]}; the others {mean:.1f} ± {sd:.1f} %"
    if unsteady:  # the curves that swung or fell explain the spread, not the steady seed
        tail = (f"; seed{'s' if len(steady) > 1 else ''} {', '.join(steady)} steady"
                if steady else "")
        return f"training unstable at this lr: {'; '.join(unsteady)}{tail}"
    if outlier:
        i, mean, sd = outlier
        what = "lower" if cell.accs[i] < mean else "higher"
        return (f"one seed is the outlier: seed {seeds[i]} ended {what} on a steady curve "
                f"({cell.accs[i]:.1f} %); the others {mean:.1f} ± {sd:.1f} %")
    return ("the seeds plateau at different accuracies "
            f"({', '.join(f'{a:.1f}' for a in cell.accs)} %), none fell back or swung")
