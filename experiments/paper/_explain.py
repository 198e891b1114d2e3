"""Measured explanations the report prints beside a claim's check (``Check.explained_by``).

Each explanation reads its own experiment's results from the workdir and returns one
sentence with the numbers, or None when that experiment has not run there. The report never
states a cause it did not measure.

- ``ablation_asap_alexnet``: why ASAP trails DFA on the cpu-scale AlexNet
  (``experiments/ablation_asap_alexnet.py``, issue 26; docs/notes/rules_as.md). The sentence
  names the cell with the largest gain over ASAP and the remaining gap to DFA, and the
  gains of the frozen-conv, lr and width cells, from ``ablation.json``.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Callable


def _cells(workdir: str, name: str) -> dict[str, list[float]] | None:
    path = os.path.join(workdir, name, "ablation.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    return {cell: [float(s["accuracy"]) for s in v.get("seeds", {}).values()]
            for cell, v in summary.items() if v.get("seeds")}


def _ms(accs: list[float]) -> str:
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return f"{statistics.fmean(accs):.1f} ± {sd:.1f}"


def _mean(accs: list[float]) -> float:
    return statistics.fmean(accs)


#: The ablation's cells by the candidate cause they test (the cell's change, in words).
CAUSES = (
    ("the FC layers' FA feedback (the authors' B ~ U(−1, 1))", "ASAP's own update in the FC "
     "layers", ("asap_dense_own",)),
    ("the scale of the FC layers' fixed B", "He-scaled B", ("asap_dense_he",)),
    ("the frozen first conv", "the first conv trained", ("asap_first_trained",)),
    ("the lr", "lr ×1/3, ×3 or ×9", ("asap_lr_x0.3", "asap_lr_x3", "asap_lr_x9")),
    ("the width", "width ×0.25", ("asap_w0.25",)),
)


def asap_alexnet(workdir: str) -> str | None:
    cells = _cells(workdir, "ablation_asap_alexnet") if workdir else None
    if not cells or "asap" not in cells or "dfa" not in cells:
        return None
    base = _mean(cells["asap"])
    gap = _mean(cells["dfa"]) - base
    tried = []  # (gain, cause, change, best cell)
    for cause, change, names in CAUSES:
        have = [n for n in names if n in cells]
        if have:
            best = max(have, key=lambda n: _mean(cells[n]))
            tried.append((_mean(cells[best]) - base, cause, change, best))
    if not tried:
        return None
    seeds = min(len(cells[c]) for c in ("asap", "dfa", *(t[3] for t in tried)))
    gain, cause, change, best = max(tried)
    head = (f"why (ablation, {seeds} seed{'s' if seeds > 1 else ''}, docs/notes/rules_as.md; "
            f"ASAP {_ms(cells['asap'])}, DFA {_ms(cells['dfa'])}): ")
    if gain <= 0:
        return head + "none of the tested changes lifts ASAP (" + "; ".join(
            f"{ch} {g:+.1f}" for g, _, ch, _ in tried) + ")."
    others = "; ".join(f"{ch} {g:+.1f}" for g, c, ch, _ in tried if c != cause)
    text = (f"{cause} explains {min(gain, gap):.1f} of the {gap:.1f}-pt gap: with {change} "
            f"ASAP reaches {_ms(cells[best])}; the other changes: {others}")
    if "asap_w0.25" in cells and "dfa_w0.25" in cells:
        text += (f" (at width ×0.25 the gap is {_mean(cells['dfa_w0.25']) - _mean(cells['asap_w0.25']):.1f}"
                 " pt)")
    return head + text + "."


EXPLANATIONS: dict[str, Callable[[str], str | None]] = {
    "ablation_asap_alexnet": asap_alexnet,
}


def explain(key: str, workdir: str) -> str | None:
    """The sentence of explanation ``key`` for ``workdir`` (None if it has not run)."""
    return EXPLANATIONS[key](workdir) if key else None
