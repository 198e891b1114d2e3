"""The papers' claims that ``experiments.report`` checks, each with a one-sentence verdict.

A claim is a list of checks between two cells (a row's model and a method) of one table:

- ``greater``: a > b. *agrees* when a's mean is above b's by more than the combined std of
  the seeds, *disagrees* when below by more than it, else *tie at this scale*;
- ``close``: |a − b| ≤ ``tol`` points, two-sided: every claim of equality ("≈", "within 1
  point") is one. *agrees* when |Δ| ≤ tol, *disagrees* when |Δ| exceeds tol by more than the
  combined std, else *borderline* (beyond tol, within the seeds' spread of it).

A check gets no verdict but *undecided: <reason>* when one of its cells is under-trained
(``_report_stats.cell_under_trained``, the flag of the report's tables: near chance, still
rising 1 point or more in its last epoch, or one epoch; a check's ``fails`` names the cell
whose failure the claim states, for which chance is the claim, not under-training) or, for
accuracies, when a cell's seeds spread more than ``SPREAD`` points (sample std).

Rows are named ``<data> / <model>`` (``experiments/paper/tables.py``); a check names the model part
and is evaluated on every dataset the table has a row for (or, when the report does not hold
that table, the first table of the report holding both cells: :func:`decide`). A claim's
heading counts its checks' verdicts: "agrees (2 of 2)", "mixed. Agrees (2 of 3), undecided
(1)".
"""

from __future__ import annotations

import dataclasses

from experiments.paper import _report_stats as stats


@dataclasses.dataclass(frozen=True)
class Check:
    table: str
    a: tuple[str, str]  # (model part of the row, method column)
    b: tuple[str, str]
    kind: str = "greater"  # greater | close
    tol: float = 1.0  # points, for ``close``
    metric: str = "accuracy"  # accuracy | ratio (al3.4's inter:intra ratio)
    fails: str = ""  # "a" / "b": the cell the claim says fails (at chance is no under-training)
    explained_by: str = ""  # an experiments.paper._explain key: a measured cause, if it ran


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
          (Check("al_sigmoid", ("sigmoid MLP (depth 8)", "AL"), ("sigmoid MLP (depth 8)", "BP"),
                 fails="b"),)),
    Claim("asap_dfa_fa", "ASAP > DFA > FA on conv nets (ASAP thesis Table 5.2)",
          tuple(Check("wt5.2", (m, hi), (m, lo),
                      explained_by="ablation_asap_alexnet" if (m, hi) == ("AlexNet", "ASAP")
                      else "")
                for m in ("AlexNet", "ResNet-18") for hi, lo in (("ASAP", "DFA"), ("DFA", "FA")))),
    Claim("asap_shortcut", "ASAP gains from shortcuts: ResNet-18 > ResNet-18 without "
          "shortcuts (Table 5.2)",
          (Check("wt5.2", ("ResNet-18", "ASAP"), ("ResNet-18 nsc", "ASAP")),)),
    Claim("kp_close", "KP ≈ BP (within 1 point; Table 5.2)",
          tuple(Check("wt5.2", (m, "KP"), (m, "BP"), "close") for m in ("AlexNet", "ResNet-18"))),
    Claim("asap_k4", "ASAP k=4 ≈ ASAP k=2 (within 1 point; Fig. 5.4: 93.90 vs 93.97 on "
          "CIFAR-10 ResNet-34)",
          tuple(Check("wt_k4", (m, "ASAP k=4"), (m, "ASAP"), "close")
                for m in ("ResNet-34", "ResNet-18"))),
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


SPREAD = 3.0  # points: seeds spread (sample std) beyond which a check is undecided
VERDICTS = ("agrees", "disagrees", "tie at this scale", "borderline", "undecided")


@dataclasses.dataclass(frozen=True)
class Item:
    """One check on one dataset: its verdict (one of ``VERDICTS``) and its sentence."""

    verdict: str
    line: str
    table: str  # the table whose cells decided it
    check: Check


@dataclasses.dataclass(frozen=True)
class Result:
    claim: Claim
    items: tuple[Item, ...]

    @property
    def overall(self) -> str:
        """The verdict every item shares, "mixed" when they differ, "not run" with none."""
        kinds = {i.verdict for i in self.items}
        return "not run" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def heading(self) -> str:
        """The items' verdicts counted: "agrees", "agrees (2 of 2)", "mixed. Agrees (2 of 3),
        undecided (1)"."""
        n, counts = len(self.items), [(v, sum(i.verdict == v for i in self.items))
                                      for v in VERDICTS]
        counts = [(v, k) for v, k in counts if k]
        if len(counts) == 1:
            return counts[0][0] if n == 1 else f"{counts[0][0]} ({n} of {n})"
        (v0, k0), rest = counts[0], counts[1:]
        return "mixed. " + ", ".join([f"{v0.capitalize()} ({k0} of {n})"]
                                     + [f"{v} ({k})" for v, k in rest])


def _model(row: str) -> tuple[str, str]:
    data, sep, model = row.rpartition(" / ")
    return (data, model) if sep else ("", row)


def _find(cells: dict, data: str, model: str, col: str):
    row = f"{data} / {model}" if data else model
    cell = cells.get((row, col))
    return cell if cell is not None and cell.n else None


def _reason(why: str) -> str:
    """``still rising (+2.2 in the last epoch)`` -> ``+2.2 in the last epoch``;
    ``near chance (10 %)`` -> ``near chance, 10 %``."""
    head, sep, tail = why.partition(" (")
    if not sep:
        return why
    return tail[:-1] if head == "still rising" else f"{head}, {tail[:-1]}"


def undecided(check: Check, named: list[tuple[str, object]]) -> list[str]:
    """Why ``check`` on these (name, cell) pairs gets no verdict: under-trained cells first,
    then seeds spread beyond ``SPREAD`` (accuracies only) with their cause read from the
    seeds' curves (``stats.spread_cause``); [] when it can be decided."""
    if check.metric != "accuracy":
        return []
    out = [f"{n} under-trained ({_reason(why)})" for side, (n, c) in zip("ab", named)
           if (why := stats.cell_under_trained(c, chance_ok=check.fails == side))]
    for n, c in named:
        if c.std > SPREAD:
            cause = stats.spread_cause(c)
            out.append(f"{n} seeds spread ±{c.std:.2f} pt" + (f" ({cause})" if cause else ""))
    return out


def evaluate(check: Check, cells: dict, source: str = "") -> list[tuple[str, str]]:
    """(verdict, sentence) per dataset the table has both cells for; the verdict is one of
    ``VERDICTS``, the sentence ends with it (and, when undecided, its reasons). ``source``:
    the table the cells are from, named when it is not the check's own."""
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
        if source:
            nums += f" (cells of `{source}`)"
        why = undecided(check, [(na, a), (nb, b)])
        if check.kind == "close":
            if abs(d) <= check.tol:
                verdict = "agrees"
            elif abs(d) - check.tol > s:
                verdict = "disagrees"
            else:
                verdict = "borderline"
            nums += f": |Δ| {'≤' if abs(d) <= check.tol else '>'} {check.tol:g}{unit}"
        else:
            verdict = {">": "agrees", "<": "disagrees", "=": "tie at this scale"}[
                stats.order(a, b)]
        if why:
            out.append(("undecided", f"{where}{nums} — undecided: {'; '.join(why)}"))
        else:
            out.append((verdict, f"{where}{nums} — {verdict}"))
    return out


def decide(claim: Claim, cells_of, others: tuple[str, ...] = ()) -> Result:
    """The verdict of every check of ``claim``; ``cells_of(table, metric) -> cells``.

    A check whose table lacks its cells (not in the report) is decided on the first table
    of ``others`` that holds both (the same cell at the same scale: a run shared between
    tables), its sentence naming that table.
    """
    items = []
    for check in claim.checks:
        found = evaluate(check, cells_of(check.table, check.metric))
        table = check.table
        for other in (others if not found and check.metric == "accuracy" else ()):
            if other != check.table and (found := evaluate(check, cells_of(other, check.metric),
                                                           other)):
                table = other
                break
        items += [Item(v, line, table, check) for v, line in found]
    return Result(claim, tuple(items))


def verdict(claim: Claim, cells_of) -> tuple[str, list[str]]:
    """(overall verdict, one line per check) of ``claim``; ``cells_of(table) -> cells``."""
    r = decide(claim, cells_of)
    return r.overall, [i.line for i in r.items]
