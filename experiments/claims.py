"""The papers' claims that ``experiments.report`` checks, each with a one-sentence verdict.

A claim is a list of checks between two cells (a row's model and a method) of one table:

- ``greater``: a > b. *agrees* when a's mean is above b's by more than the combined std of
  the seeds, *disagrees* when below by more than it, else *tie at this scale*;
- ``close``: |a − b| ≤ ``tol`` points. *agrees* when |Δ| ≤ tol, *disagrees* when |Δ|
  exceeds tol by more than the combined std, else *borderline* (beyond tol, within the
  seeds' spread of it).

Rows are named ``<data> / <model>`` (``experiments/tables.py``); a check names the model part
and is evaluated on every dataset the table has a row for. The verdict of a claim is
*agrees* when every check agrees, *disagrees* when any disagrees, else *mixed / tie*.
"""

from __future__ import annotations

import dataclasses

from experiments import _report_stats as stats


@dataclasses.dataclass(frozen=True)
class Check:
    table: str
    a: tuple[str, str]  # (model part of the row, method column)
    b: tuple[str, str]
    kind: str = "greater"  # greater | close
    tol: float = 1.0  # points, for ``close``
    metric: str = "accuracy"  # accuracy | ratio (al3.4's inter:intra ratio)


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str
    text: str
    checks: tuple[Check, ...]


CLAIMS = (
    Claim("al_close", "AL ≈ BP (within 1 point) on the MLP and the CNN (AL thesis Tables "
          "3.1-3.3)", (Check("al3.1", ("MLP", "AL"), ("MLP", "BP"), "close"),
                       Check("al3.1", ("CNN", "AL"), ("CNN", "BP"), "close"))),
    Claim("al_sigmoid", "AL trains a deep sigmoid network where BP fails (AL thesis)",
          (Check("al_sigmoid", ("sigmoid MLP (depth 8)", "AL"), ("sigmoid MLP (depth 8)", "BP")),)),
    Claim("asap_dfa_fa", "ASAP > DFA > FA on conv nets (ASAP thesis Table 5.2)",
          tuple(Check("wt5.2", (m, hi), (m, lo)) for m in ("AlexNet", "ResNet-18")
                for hi, lo in (("ASAP", "DFA"), ("DFA", "FA")))),
    Claim("asap_shortcut", "ASAP gains from shortcuts: ResNet-18 > ResNet-18 without "
          "shortcuts (Table 5.2)",
          (Check("wt5.2", ("ResNet-18", "ASAP"), ("ResNet-18 nsc", "ASAP")),)),
    Claim("kp_close", "KP ≈ BP (within 1 point; Table 5.2)",
          tuple(Check("wt5.2", (m, "KP"), (m, "BP"), "close") for m in ("AlexNet", "ResNet-18"))),
    Claim("asap_k4", "ASAP k=4 ≤ ASAP k=2 (Fig. 5.4: 93.90 vs 93.97 on CIFAR-10 ResNet-34)",
          (Check("wt_k4", ("ResNet-34", "ASAP"), ("ResNet-34", "ASAP k=4")),
           Check("wt_k4", ("ResNet-18", "ASAP"), ("ResNet-18", "ASAP k=4")))),
    Claim("asap_wd", "Weight decay helps ASAP up to λ = 5e-4 and more hurts (Table 5.4: "
          "89.77 / 93.97 / 91.54 at λ = 0 / 5e-4 / 5e-3)",
          (Check("wt5.4", ("ASAP", "λ=5e-4"), ("ASAP", "λ=0")),
           Check("wt5.4", ("ASAP", "λ=5e-4"), ("ASAP", "λ=5e-3")))),
    Claim("asfp_lc", "ASFP < ASFP + local classifier (Table 5.5)",
          (Check("wt5.5", ("ResNet-18", "ASFP+LC"), ("ResNet-18", "ASFP")),)),
    Claim("foa_close", "FoA ≈ BP on 10-10-10 nets (within 2 points: the thesis' gaps are "
          "1.5 and 2.0; Table 3.1)",
          tuple(Check("wt3.1", (f"{n} 10-10-10", "FoA"), (f"{n} 10-10-10", "BP"), "close", 2.0)
                for n in ("linear", "nonlinear"))),
    Claim("al_seq_close", "AL ≈ its BP twin (within 1 point) with LSTM and Transformer blocks "
          "(the AL follow-up papers, on text)",
          tuple(Check("al_seq", (m, "AL"), (m, "BP"), "close") for m in ("LSTM", "Transformer"))),
    Claim("al_ratio", "AL's inter:intra class distance ratio > BP's (AL thesis Table 3.4)",
          tuple(Check("al3.4", (m, "AL"), (m, "BP"), metric="ratio") for m in ("MLP", "CNN"))),
)


def _model(row: str) -> tuple[str, str]:
    data, sep, model = row.rpartition(" / ")
    return (data, model) if sep else ("", row)


def _find(cells: dict, data: str, model: str, col: str):
    row = f"{data} / {model}" if data else model
    cell = cells.get((row, col))
    return cell if cell is not None and cell.n else None


def evaluate(check: Check, cells: dict) -> list[tuple[str, str]]:
    """(verdict, sentence) per dataset the table has both cells for."""
    out = []
    for data in dict.fromkeys(_model(r)[0] for r, _ in cells):
        a, b = _find(cells, data, *check.a), _find(cells, data, *check.b)
        if a is None or b is None:
            continue
        where = f"{data}: " if data else ""
        if check.a[0] == check.b[0] and check.a[0] != check.a[1]:  # one model: name it
            where = f"{data} / {check.a[0]}: " if data else f"{check.a[0]}: "
        unit = "" if check.metric == "ratio" else " pt"
        d, s = a.mean - b.mean, stats.combined_std(a, b)
        na, nb = f"{check.a[0]} {check.a[1]}", f"{check.b[0]} {check.b[1]}"
        if check.a[0] == check.b[0]:  # the model is in ``where``
            na, nb = check.a[1], check.b[1]
        nums = f"{na} {a.text()} vs {nb} {b.text()} (Δ {d:+.2f}{unit}, combined std {s:.2f})"
        flags = [f"{n} {why}" for n, c in ((na, a), (nb, b))
                 if check.metric == "accuracy" and (why := stats.cell_under_trained(c))]
        if flags:  # shown, not hidden: the verdict stands on the numbers as they are
            nums += f" [under-trained: {'; '.join(flags)}]"
        if check.kind == "close":
            if abs(d) <= check.tol:
                verdict = "agrees"
            elif abs(d) - check.tol > s:
                verdict = "disagrees"
            else:
                verdict = "borderline"
            out.append((verdict, f"{where}{nums}: |Δ| {'≤' if verdict == 'agrees' else '>'} "
                                 f"{check.tol:g}{unit} — {verdict}"))
        else:
            o = stats.order(a, b)
            verdict = {">": "agrees", "<": "disagrees", "=": "tie at this scale"}[o]
            out.append((verdict, f"{where}{nums} — {verdict}"))
    return out


def verdict(claim: Claim, cells_of) -> tuple[str, list[str]]:
    """(overall verdict, one line per check) of ``claim``; ``cells_of(table) -> cells``."""
    lines, verdicts = [], []
    for check in claim.checks:
        for v, line in evaluate(check, cells_of(check.table, check.metric)):
            verdicts.append(v)
            lines.append(line)
    if not verdicts:
        return "not run", []
    if all(v == "agrees" for v in verdicts):
        overall = "agrees"
    elif any(v == "disagrees" for v in verdicts):
        overall = "disagrees" if all(v == "disagrees" for v in verdicts) else "mixed"
    else:
        overall = "tie / borderline at this scale"
    return overall, lines
