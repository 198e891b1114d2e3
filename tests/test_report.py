"""experiments.report: under-trained cells are marked and not ranked; ad-hoc runs point to
experiments.compare."""

import json
import os

from experiments import report


def _write(path, obj, jsonl=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        if jsonl:
            f.writelines(json.dumps(r) + "\n" for r in obj)
        else:
            json.dump(obj, f)


def _hist(*accs):
    return [{"epoch": i + 1, "test_accuracy": a} for i, a in enumerate(accs)]


def test_under_trained_reasons():
    assert report.under_trained([], 10) is None  # no curve: nothing to judge
    assert report.under_trained(_hist(0.5, 0.9, 0.905), 10) is None  # +0.5 points: flat
    assert report.under_trained(_hist(0.5, 0.9, 0.93), 10) == \
        "still rising (+3.0 in the last epoch)"
    assert report.under_trained(_hist(0.3, 0.14), 10) == "near chance (10 %)"  # 14 - 10 < 5
    assert report.under_trained(_hist(0.02, 0.05), 100) == "near chance (1 %)"
    assert report.under_trained(_hist(0.9), 10) == "1 epoch, no curve to judge"


def test_report_marks_under_trained_cells_and_does_not_rank_them(tmp_path):
    _write(str(tmp_path / "wt5.2" / "manifest.json"), {"scale": "paper", "runs": {}})
    cells = {"alexnet_mnist_bp_s0": _hist(0.8, 0.9, 0.905),
             "alexnet_mnist_kp_s0": _hist(0.7, 0.8), "alexnet_mnist_fa_s0": _hist(0.1, 0.12),
             "alexnet_mnist_dfa_s0": _hist(0.85, 0.95, 0.95)}
    for name, hist in cells.items():
        _write(str(tmp_path / "wt5.2" / name / "results.json"),
               {"test_accuracy": hist[-1]["test_accuracy"]})
        _write(str(tmp_path / "wt5.2" / name / "metrics.jsonl"), hist, jsonl=True)
    md = report.render_table("wt5.2", str(tmp_path))
    assert "| 90.50 | 1 | 99.59 | -9.09 | — | yes |" in md
    assert "| 80.00 | 1 | 99.55 | -19.55 | — | **no**: still rising (+10.0 in the last epoch) |" in md
    assert "| 12.00 | 1 | 99.14 | -87.14 | — | **no**: near chance (10 %) |" in md
    assert ("- **MNIST / AlexNet**: not ranked, under-trained: KP (still rising (+10.0 in the "
            "last epoch)); FA (near chance (10 %)).") in md
    # only BP and DFA are ranked: DFA 95.0 > BP 90.5 reverses the paper's BP > DFA
    assert "ours DFA > BP (reversed: DFA > BP)" in md
    assert "KP >" not in md.split("not ranked")[1] and "FA >" not in md.replace("DFA >", "")


def test_report_on_training_runs_points_to_compare(tmp_path, capsys):
    for r in ("bp", "fa"):
        _write(str(tmp_path / r / "metrics.jsonl"), _hist(0.5), jsonl=True)
    assert report.main([f"--workdir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert f"python -m experiments.compare --workdirs={tmp_path / 'bp'},{tmp_path / 'fa'}" in err
    assert not os.path.exists(tmp_path / "report")
