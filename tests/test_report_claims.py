"""experiments.report's claims: the disagreement section is built from the claims' verdicts,
a report for a subset of tables shows the claims those tables decide, and the report states
the commits its runs were made at (recorded per run by experiments.reproduce). Issue 26.

The runs' results are hand-made files; nothing trains.
"""

import io
import json
import os

import pytest

from experiments.paper import _tables_cpu as cs
from experiments import report, reproduce
from experiments.paper import tables
from tests.test_reproduce import _write, fake_sweep


@pytest.fixture(autouse=True)
def _forget_workdir():
    yield
    cs.set_workdir(None)


def put(workdir, table, cells, manifest=None):
    """Writes ``{(row, method): [acc % per seed]}`` as finished cpu-scale runs of ``table``
    (flat curves: trained enough to rank)."""
    workdir = str(workdir)
    cs.set_workdir(workdir, allow_pending=True)
    runs = tables.runs(table, "cpu")
    todo = dict(cells)
    for run in runs:
        accs = todo.get((run.row, run.col))
        if accs is None:
            continue
        a = accs[run.seed or 0]
        rundir = os.path.join(workdir, table, run.name)
        _write(os.path.join(rundir, "results.json"), {"test_accuracy": a / 100})
        with open(os.path.join(rundir, "metrics.jsonl"), "w") as f:
            for e, x in enumerate((a - 5, a - 0.2, a)):
                f.write(json.dumps({"epoch": e + 1, "test_accuracy": x / 100}) + "\n")
    assert {(r.row, r.col) for r in runs} >= set(cells), "a cell the table does not have"
    _write(os.path.join(workdir, table, "manifest.json"),
           manifest or {"scale": "cpu", "runs": {}})


def section(md, title):
    """The body of the first section whose heading starts with ``title``."""
    return next(p for p in md.split("\n## ") if p.startswith(title))


ALEX = "Fashion-MNIST / AlexNet"
RES = "Fashion-MNIST / ResNet-18"


def test_disagreement_section_is_built_from_the_claims(tmp_path):
    """Fashion-MNIST rows have no paper numbers: the old section read only rows with paper
    numbers and said "nowhere" under a claim marked "disagrees"."""
    put(tmp_path, "wt5.2", {(ALEX, "ASAP"): [76, 77, 77.5], (ALEX, "DFA"): [82.5, 83, 83.8],
                            (ALEX, "FA"): [76.5, 77, 78]})
    md = open(report.write_report(str(tmp_path), str(tmp_path / "out"), ["wt5.2"])).read()
    where = section(md, "Where ")
    assert "nowhere" not in where
    assert "**ASAP > DFA > FA on conv nets (ASAP thesis Table 5.2)**" in where
    assert "Fashion-MNIST / AlexNet: ASAP 76.83 ± 0.76 vs DFA 83.10 ± 0.66" in where
    assert "DFA 83.10 ± 0.66 vs FA" not in where  # DFA > FA agrees: not listed


def test_disagreement_section_says_nowhere_and_counts_the_undecided(tmp_path):
    put(tmp_path, "wt5.2", {(ALEX, "KP"): [86.5, 86.8, 87.2], (ALEX, "BP"): [87.2, 87.6, 87.9],
                            (RES, "KP"): [60, 70, 80], (RES, "BP"): [81, 81.2, 81.3]})
    md = open(report.write_report(str(tmp_path), str(tmp_path / "out"), ["wt5.2"])).read()
    where = section(md, "Where ")
    assert "- no claim's check disagrees; 1 of 2 is undecided (listed with its reason under " \
           "the claims above)." in where
    claims_md = section(md, "The papers' claims at this scale")
    assert "**KP ≈ BP (within 1 point; Table 5.2)**: mixed. Agrees (1 of 2), undecided (1)." \
        in claims_md
    assert "undecided: KP seeds spread ±10.00 pt" in claims_md


def test_a_report_for_one_table_shows_the_claims_its_cells_decide(tmp_path):
    """wt_k4 holds ResNet-18's BP, KP and ASAP cells too: its report decides KP ≈ BP there,
    though the claim is stated for Table 5.2."""
    put(tmp_path, "wt_k4", {(RES, "ASAP"): [63, 63.5, 64], (RES, "ASAP k=4"): [63.2, 63.6, 64.1],
                            (RES, "KP"): [80.5, 81, 81.2], (RES, "BP"): [81, 81.2, 81.3]})
    md = open(report.write_report(str(tmp_path), str(tmp_path / "out"), ["wt_k4"])).read()
    claims_md = section(md, "The papers' claims at this scale")
    assert "**ASAP k=4 ≈ ASAP k=2" in claims_md
    assert "**KP ≈ BP (within 1 point; Table 5.2)**: agrees." in claims_md
    assert "(cells of `wt_k4`)" in claims_md
    # with Table 5.2 in the report, its own cells decide, listed once
    put(tmp_path, "wt5.2", {(RES, "KP"): [80.5, 81, 81.2], (RES, "BP"): [81, 81.2, 81.3]})
    md = open(report.write_report(str(tmp_path), str(tmp_path / "out"))).read()
    claims_md = section(md, "The papers' claims at this scale")
    assert claims_md.count("ResNet-18: KP") == 1 and "(cells of `wt_k4`)" not in claims_md


def test_reproduce_records_each_runs_commit_and_the_report_states_it(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "execute", lambda run, rundir: _write(
        os.path.join(rundir, "results.json"), {"test_accuracy": 0.5}))
    fake_sweep(tmp_path)
    monkeypatch.setattr(reproduce, "code_version", lambda: "abc1234")
    reproduce.reproduce("al_sigmoid", "cpu", str(tmp_path), out=io.StringIO())
    runs = tables.runs("al_sigmoid", "cpu")
    manifest = json.load(open(tmp_path / "al_sigmoid" / "manifest.json"))
    assert {v["code_version"] for v in manifest["runs"].values()} == {"abc1234"}
    os.remove(tmp_path / "al_sigmoid" / runs[0].name / "results.json")  # one more at another
    monkeypatch.setattr(reproduce, "code_version", lambda: "def5678+dirty")
    reproduce.reproduce("al_sigmoid", "cpu", str(tmp_path), out=io.StringIO())
    manifest = json.load(open(tmp_path / "al_sigmoid" / "manifest.json"))
    assert manifest["runs"][runs[0].name]["code_version"] == "def5678+dirty"
    assert manifest["runs"][runs[1].name]["code_version"] == "abc1234"  # kept, not overwritten
    text = "\n".join(report.machine_section(str(tmp_path), ["al_sigmoid"]))
    assert "abc1234 (5 runs), def5678+dirty (1 run)" in text and "not recorded" not in text


def test_report_commit_of_runs_without_their_own(tmp_path):
    """Manifests from before the per-run record: the table's commit (its last command's),
    said to be that; none at all: said, with the number of runs."""
    put(tmp_path, "wt5.2", {(ALEX, "KP"): [86.5, 86.8, 87.2], (ALEX, "BP"): [87.2, 87.6, 87.9]},
        manifest={"scale": "cpu", "code_version": "12bc873", "runs": {}})
    put(tmp_path, "wt5.5", {(RES, "BP"): [81, 81.2, 81.3]})
    text = "\n".join(report.machine_section(str(tmp_path), ["wt5.2", "wt5.5"]))
    assert "12bc873 (6 runs; the commit of the table's last command, not recorded per run)" \
        in text
    assert "not recorded for 3 runs (wt5.5)" in text


def _ablation(workdir, cells):
    """A hand-made ablation.json: {cell: [acc % per seed]}."""
    _write(os.path.join(str(workdir), "ablation_asap_alexnet", "ablation.json"),
           {c: {"seeds": {str(s): {"accuracy": a} for s, a in enumerate(accs)}}
            for c, accs in cells.items()})


def test_the_measured_cause_stands_beside_the_alexnet_claim(tmp_path):
    """Issue 26: the ablation's largest gain names the cause, with its numbers, under the
    AlexNet ASAP-vs-DFA check and in the disagreement section; nothing without the ablation."""
    put(tmp_path, "wt5.2", {(ALEX, "ASAP"): [76, 77, 77.5], (ALEX, "DFA"): [82.5, 83, 83.8],
                            (ALEX, "FA"): [76.5, 77, 78]})
    md = open(report.write_report(str(tmp_path), str(tmp_path / "out"), ["wt5.2"])).read()
    assert "why (ablation" not in md and "Why (ablation" not in md
    _ablation(tmp_path, {"asap": [76, 77, 78], "dfa": [82, 83, 84],
                         "asap_dense_own": [80, 81, 82], "asap_first_trained": [77, 78, 79],
                         "asap_lr_x3": [75, 76, 77]})
    md = open(report.write_report(str(tmp_path), str(tmp_path / "out"), ["wt5.2"])).read()
    claim = section(md, "The papers' claims")
    line = next(x for x in claim.splitlines() if "why (ablation" in x)
    assert line.startswith("    - why (ablation, 3 seeds")
    assert "ASAP 77.0 ± 1.0, DFA 83.0 ± 1.0" in line
    assert "the FC layers' FA feedback" in line and "explains 4.0 of the 6.0-pt gap" in line
    assert "the first conv trained +1.0" in line and "lr ×1/3, ×3 or ×9 -1.0" in line
    assert "Why (ablation, 3 seeds" in section(md, "Where ")
    # The first conv is the one that helps: the sentence follows the numbers, not a script.
    _ablation(tmp_path, {"asap": [76, 77, 78], "dfa": [82, 83, 84],
                         "asap_dense_own": [76, 77, 78], "asap_first_trained": [79, 80, 81]})
    md = open(report.write_report(str(tmp_path), str(tmp_path / "out"), ["wt5.2"])).read()
    assert "the frozen first conv explains 3.0 of the 6.0-pt gap" in md
    _ablation(tmp_path, {"asap": [76, 77, 78], "dfa": [82, 83, 84],
                         "asap_dense_own": [75, 76, 77]})
    md = open(report.write_report(str(tmp_path), str(tmp_path / "out"), ["wt5.2"])).read()
    assert "none of the tested changes lifts ASAP (ASAP's own update in the FC layers -1.0)" in md


def test_the_ablation_records_each_runs_commit_and_wt52_reads_it_through_the_share(
        tmp_path, monkeypatch):
    """The AlexNet cells wt5.2 shares from the ablation: the ablation's manifest holds each
    run's commit and wall time (as reproduce's do), the report states that commit for the
    shared runs instead of "not recorded", counts their wall time once, and states the
    ablation's own cost and commits."""
    from absl import flags
    from absl.testing import flagsaver
    from experiments import ablation_asap_alexnet as abl

    fake_sweep(tmp_path)
    monkeypatch.setattr(reproduce, "execute", lambda run, rundir: _write(
        os.path.join(rundir, "results.json"), {"test_accuracy": 0.8}))
    monkeypatch.setattr(reproduce, "code_version", lambda: "feed123")
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["abl", f"--workdir={tmp_path}", "--seeds=0", "--cells=bp,asap_lr_x3"])
        assert abl.main(["abl"]) == 0
    runs = json.load(open(tmp_path / abl.TABLE / "manifest.json"))["runs"]
    assert sorted(runs) == ["asap_lr_x3_s0", "bp_s0"]
    assert {v["code_version"] for v in runs.values()} == {"feed123"}
    monkeypatch.setattr(reproduce, "code_version", lambda: "cafe456")
    reproduce.reproduce("wt5.2", "cpu", str(tmp_path), out=io.StringIO(), seeds=(0,))
    wt = json.load(open(tmp_path / "wt5.2" / "manifest.json"))["runs"]
    assert wt["alexnet_mnist_bp_s0"]["shared_with"] == f"{abl.TABLE}/bp_s0"
    for name, v in [("alexnet_mnist_bp_s0", 0.0)] + [(n, 100.0) for n in wt
                                                      if n != "alexnet_mnist_bp_s0"]:
        wt[name]["wall_time_s"] = v
    runs["bp_s0"]["wall_time_s"], runs["asap_lr_x3_s0"]["wall_time_s"] = 60.0, 600.0
    _write(str(tmp_path / "wt5.2" / "manifest.json"), {"scale": "cpu", "runs": wt})
    _write(str(tmp_path / abl.TABLE / "manifest.json"), {"command": "abl cmd", "runs": runs})
    text = "\n".join(report.machine_section(str(tmp_path), ["wt5.2"]))
    assert f"cafe456 ({len(wt) - 1} runs), feed123 (1 run)." in text
    assert "not recorded" not in text
    assert f"is {((len(wt) - 1) * 100 + 60) / 60:.1f} min" in text  # the shared run once
    assert "`ablation_asap_alexnet` (`abl cmd`): 2 runs, 11.0 min" in text
    assert "code version feed123 (2 runs)." in text


def test_the_memory_table_reports_a_k_the_model_cannot_use(tmp_path):
    """wt6.1 holds "not_applicable" for ASAP k=4 on the AlexNet (its groups are k=2's): the
    report's table says so and its access plot leaves that bar out (it raised KeyError
    'access' on the real run, 2026-12-07)."""
    def acc(total):
        q = total // 4
        return {"forward_read": q, "forward_write": q, "backward_read": q,
                "backward_write": total - 3 * q, "total": total}

    models = {"alexnet": {"BP": {"params": 10, "saved_activations": 100, "access": acc(400)},
                          "ASAP k=2": {"params": 10, "saved_activations": 60,
                                       "access": acc(300)},
                          "ASAP k=4": {"params": 10, "not_applicable": "k=4 cannot apply"}}}
    _write(str(tmp_path / "wt6.1" / "access" / "results.json"),
           {"models": models, "options": {}})
    _write(str(tmp_path / "wt6.1" / "manifest.json"), {"scale": "cpu", "runs": {}})
    out = tmp_path / "out"
    md = open(report.write_report(str(tmp_path), str(out), ["wt6.1"])).read()
    assert "| alexnet | ASAP k=4 | 10 | not applicable |" in md
    assert "accesses BP > ASAP k=2 — agrees" in md
    assert os.path.getsize(out / "wt6.1_access.png") > 1000
