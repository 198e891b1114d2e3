"""experiments.compare: table values from hand-written run folders, the figure, the errors."""

import json
import os

import pytest

from experiments import compare


def _run(path, hist, results=None):
    os.makedirs(path)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in hist)
    if results is not None:
        with open(os.path.join(path, "results.json"), "w") as f:
            json.dump(results, f)
    return str(path)


def _hist(accs, angles=None):
    out = []
    for i, a in enumerate(accs):
        r = {"epoch": i + 1, "test_accuracy": a, "train_accuracy": a + 0.01,
             "test_loss": 1.0 - a, "train_loss": 0.9 - a, "epoch_time_s": 2.5}
        if angles:
            r.update({f"update_vs_bp/Dense_{j}": v for j, v in enumerate(angles[i])})
        out.append(r)
    return out


def test_compare_table_and_figure(tmp_path, capsys):
    bp = _run(tmp_path / "bp", _hist([0.5, 0.8, 0.75]),
              {"rule": "bp", "model": "mlp", "dataset": "mnist5k", "wall_time_s": 31.4,
               "train_samples_per_second": 1234.6})
    fa = _run(tmp_path / "fa", _hist([0.4, 0.6], angles=[[80.0, 40.0], [70.0, 30.0]]))
    assert compare.main([f"--workdirs={bp},{fa}", f"--out={tmp_path / 'out'}",
                         "--labels=BP,FA"]) == 0
    md = (tmp_path / "out" / "compare.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in md.splitlines() if line.startswith("| BP") or line.startswith("| FA")}
    # final 75.00, best 80.00 at epoch 2, final train 76.00, 1235 samples/s, 31 s
    assert rows["BP"][1:] == ["bp", "mlp", "mnist5k", "3", "75.00", "80.00 (ep 2)", "76.00",
                              "1235", "31", "yes"]
    # unfinished: no results.json; wall = the two epochs' 2.5 s each
    assert rows["FA"][4:] == ["2", "60.00", "60.00 (ep 2)", "61.00", "—", "5", "no (partial)"]
    assert "compare.md" in capsys.readouterr().out
    with open(tmp_path / "out" / "compare.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_mean_angle_over_layers():
    rec = {"epoch": 1, "update_vs_bp/a": 10.0, "update_vs_bp/b": 30.0, "b_vs_w/b": 5.0}
    assert compare._mean_angle(rec, compare.UPDATE) == 20.0
    assert compare._mean_angle(rec, compare.FEEDBACK) == 5.0
    assert compare._mean_angle({"epoch": 1}, compare.UPDATE) is None


def test_compare_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare.main([f"--workdirs={tmp_path}", f"--out={tmp_path / 'o'}"])
    assert "holds no metrics.jsonl" in capsys.readouterr().err
    run = _run(tmp_path / "r", _hist([0.5]))
    with pytest.raises(ValueError, match="2 labels for 1 workdirs"):
        compare.compare([run], str(tmp_path / "o"), ["a", "b"])


def test_layers_at_zero_throughout_are_left_out_of_the_mean():
    hist = [{"update_vs_bp/h": 60.0, "update_vs_bp/out": 0.0},
            {"update_vs_bp/h": 50.0, "update_vs_bp/out": 0.0}]
    skip = compare._always_zero(hist, compare.UPDATE)
    assert skip == {"update_vs_bp/out"}
    assert compare._mean_angle(hist[1], compare.UPDATE, skip) == 50.0
    bp = [{"update_vs_bp/h": 0.0, "update_vs_bp/out": 0.0}]
    assert compare._mean_angle(bp[0], compare.UPDATE, compare._always_zero(bp, compare.UPDATE)) \
        == 0.0
