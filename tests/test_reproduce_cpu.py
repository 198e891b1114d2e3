"""The cpu scale of experiments.reproduce: the lr rule, seeds, shared runs, mean ± std, claims.

No training: ``reproduce.execute`` is replaced by a fake writing results.json.
"""

import io
import json
import math
import os

import pytest

from experiments.paper import _report_stats as stats
from experiments.paper import _tables_cpu as cs
from experiments import report, reproduce
from experiments.paper import claims, tables
from experiments.configs import wt
from tests.test_reproduce import _write, fake_sweep


@pytest.fixture(autouse=True)
def _forget_workdir():
    yield
    cs.set_workdir(None)


def test_cpu_runs_take_the_factor_the_sweep_chose(tmp_path):
    fake_sweep(tmp_path, best={("alexnet", "bp"): 3.0, ("al_mlp", "al"): 10.0,
                               ("al_mlp", "bp"): 3.0, ("alexnet", "fa"): 100.0,
                               ("resnet", "bp"): 1 / 3})
    cs.set_workdir(str(tmp_path))
    runs = {r.name: r for r in tables.runs("wt5.2", "cpu")}
    kp = runs["alexnet_mnist_kp_s0"].config  # Table 5.1's KP rate x the BP sweep's factor
    assert kp.learning_rate == pytest.approx(wt.LEARNING_RATES["alexnet"]["kp"] * 3.0)
    fa = runs["alexnet_mnist_fa_s0"].config  # AlexNet's FA has a sweep of its own
    assert fa.learning_rate == pytest.approx(wt.LEARNING_RATES["alexnet"]["fa"] * 100.0)
    dfa = runs["alexnet_mnist_dfa_s1"].config  # ... DFA's chose x1 (the fake's default)
    assert dfa.learning_rate == pytest.approx(wt.LEARNING_RATES["alexnet"]["dfa"])
    r_kp = runs["resnet18_cifar10_kp_s0"].config  # ResNet's KP follows BP's x1/3
    assert r_kp.learning_rate == pytest.approx(wt.LEARNING_RATES["resnet"]["kp"] / 3)
    r_fa = runs["resnet18_cifar10_fa_s0"].config  # ... its FA (3e-3 < BP's 3e-2) has its own
    assert r_fa.learning_rate == pytest.approx(wt.LEARNING_RATES["resnet"]["fa"])
    nsc = runs["resnet18_nsc_cifar10_asap_s0"].config  # ASAP nsc: 3e-3, its own sweep (x1)
    assert nsc.model == "resnet18_nsc" and nsc.learning_rate == pytest.approx(3e-3)
    assert fa.dataset == "fashion_mnist" and fa.dataset_options.train_examples == 6000
    assert "validation" not in fa.dataset_options  # the tables train on the whole split
    al = {r.name: r.config for r in tables.runs("al3.1", "cpu")}
    assert al["mlp_al_s0"].learning_rate == pytest.approx(1e-3)  # AL code's 1e-4 x 10
    assert al["mlp_bp_s0"].learning_rate == pytest.approx(3e-4)  # BP twin's 1e-4 x 3
    assert al["cnn_al_s0"].learning_rate == pytest.approx(1e-4)


def test_a_pending_sweep_stops_with_the_command(tmp_path):
    cs.set_workdir(str(tmp_path))
    with pytest.raises(cs.SweepPendingError, match="--table=lr_sweep --scale=cpu"):
        tables.runs("wt5.2", "cpu")
    fake_sweep(tmp_path)
    os.remove(tmp_path / "lr_sweep" / "resnet_bp_x3_s0" / "results.json")
    with pytest.raises(cs.SweepPendingError, match=r"resnet/bp .*factors x3 missing"):
        tables.runs("wt5.2", "cpu")


def test_sweep_holds_out_part_of_train_with_one_seed_and_half_the_epochs(tmp_path):
    cs.set_workdir(str(tmp_path), allow_pending=True)
    runs = tables.runs("lr_sweep", "cpu")
    assert len(runs) == sum(len(cs.factors(f, m)) for f, m in cs.SWEPT)
    for r in runs:
        family = r.row
        assert r.seed == 0 and r.name.endswith("_s0")
        assert r.config.dataset_options.validation == cs.VALIDATION  # never the test split
        assert r.config.epochs == math.ceil(cs.FAMILIES[family].epochs / 2)
    al_bp = {r.name: r.config for r in runs if r.name.startswith("al_mlp_bp_")}
    assert al_bp["al_mlp_bp_x10_s0"].learning_rate == pytest.approx(1e-3)
    assert al_bp["al_mlp_bp_x10_s0"].rule == "bp"


def test_best_factor_prefers_the_paper_rate_on_ties():
    assert cs.best_factor({1 / 3: 0.8, 1.0: 0.8, 3.0: 0.7}) == 1.0
    assert cs.best_factor({1.0: 0.8, 3.0: 0.81, 10.0: 0.81}) == 3.0


def test_three_seeds_per_cell_differ_only_in_seed(tmp_path):
    fake_sweep(tmp_path)
    cs.set_workdir(str(tmp_path))
    runs = tables.runs("al3.1", "cpu")
    assert [r.name for r in runs[:3]] == ["mlp_bp_s0", "mlp_bp_s1", "mlp_bp_s2"]
    assert len(runs) == 4 * 3
    a, b = runs[0].config.to_dict(), runs[1].config.to_dict()
    assert a.pop("seed") == 0 and b.pop("seed") == 1 and a == b
    assert len(tables.runs("al3.1", "cpu", seeds=(5,))) == 4


def test_runs_shared_across_tables_are_not_trained_twice(tmp_path, monkeypatch):
    fake_sweep(tmp_path)
    calls = []

    def fake(run, rundir):
        calls.append(run.name)
        _write(os.path.join(rundir, "results.json"), {"test_accuracy": 0.5})

    monkeypatch.setattr(reproduce, "execute", fake)
    reproduce.reproduce("wt5.2", "cpu", str(tmp_path), out=io.StringIO())
    calls.clear()
    out = io.StringIO()
    reproduce.reproduce("wt5.5", "cpu", str(tmp_path), out=out)
    # BP and ASAP ResNet-18 are Table 5.2's runs: only ASFP and ASFP+LC train
    assert sorted(calls) == sorted(f"resnet18_cifar10_{r}_s{s}" for r in ("asfp", "asfp_lc")
                                   for s in (0, 1, 2))
    link = tmp_path / "wt5.5" / "resnet18_cifar10_bp_s1"
    assert link.is_symlink() and os.path.samefile(link,
                                                  tmp_path / "wt5.2" / "resnet18_cifar10_bp_s1")
    manifest = json.load(open(tmp_path / "wt5.5" / "manifest.json"))
    assert manifest["runs"]["resnet18_cifar10_asap_s2"]["shared_with"] == \
        os.path.join("wt5.2", "resnet18_cifar10_asap_s2")
    assert "not trained again" in out.getvalue()


def _cell_results(workdir, table, accs: dict[str, list[float]], scale="cpu"):
    _write(os.path.join(workdir, table, "manifest.json"), {"scale": scale, "runs": {}})
    for cell, values in accs.items():
        for seed, a in enumerate(values):
            rundir = os.path.join(workdir, table, f"{cell}_s{seed}")
            _write(os.path.join(rundir, "results.json"), {"test_accuracy": a / 100})
            with open(os.path.join(rundir, "metrics.jsonl"), "w") as f:
                for e, x in enumerate((a - 3, a - 0.5, a)):
                    f.write(json.dumps({"epoch": e + 1, "test_accuracy": x / 100}) + "\n")


def test_report_mean_std_over_seeds_and_claim_verdicts(tmp_path):
    fake_sweep(tmp_path)
    _cell_results(tmp_path, "al3.1", {"mlp_al": [88, 89, 90], "mlp_bp": [89, 89.5, 90.5],
                                      "cnn_al": [80, 80, 80.3], "cnn_bp": [85, 85.2, 85.1]})
    md = report.render_table("al3.1", str(tmp_path))
    # mean 89, sample std 1; BP mean 89.667, std sqrt(((.667)^2+(.167)^2+(.833)^2)/2) = 0.764
    assert "| Fashion-MNIST / MLP | AL |" in md and "| 89.00 ± 1.00 | 3 |" in md
    assert "| 89.67 ± 0.76 | 3 |" in md
    assert "BP convergence, Fashion-MNIST / MLP: 89.67 % after 3 epochs, +3.00 pt" in md
    cs.set_workdir(str(tmp_path))
    cells = report.table_cells("al3.1", str(tmp_path))
    overall, lines = claims.verdict(claims.CLAIMS[0], lambda t, m: cells)
    # MLP: |Δ| 0.67 <= 1 agrees; CNN: Δ -5.0, far beyond 1 + combined std -> disagrees
    assert overall == "mixed"
    assert lines[0].startswith("Fashion-MNIST / MLP: AL 89.00 ± 1.00 vs BP 89.67 ± 0.76 (Δ -0.67 pt")
    assert lines[0].endswith("— agrees") and lines[1].endswith("— disagrees")
    full = open(report.write_report(str(tmp_path), str(tmp_path / "out"))).read()
    assert "**AL ≈ BP (within 1 point) on the MLP and the CNN" in full and "mixed." in full


def _c(*accs):
    return stats.Cell("r", "m", "", accs=list(accs))


def test_order_and_close_use_the_combined_std():
    assert stats.order(_c(80, 81, 82), _c(79, 81, 83)) == "="  # Δ 0 within spread
    assert stats.order(_c(85, 85.5, 86), _c(80, 80.5, 81)) == ">"
    # Δ = 1.5 beyond tol 1 by 0.5 < combined std sqrt(0.5^2 + 0.5^2)*... -> borderline
    cells = {("d / M", "A"): _c(90, 91, 92), ("d / M", "B"): _c(88.5, 89.5, 90.5)}
    check = claims.Check("t", ("M", "A"), ("M", "B"), "close", 1.0)
    [(v, _)] = claims.evaluate(check, cells)
    assert v == "borderline"  # |Δ| - tol = 0.5 <= combined std sqrt(2) = 1.41
    cells[("d / M", "B")] = _c(85, 86, 87)  # |Δ| - tol = 4 > 1.41
    assert claims.evaluate(check, cells)[0][0] == "disagrees"
    greater = claims.Check("t", ("M", "B"), ("M", "A"))
    assert claims.evaluate(greater, cells)[0][0] == "disagrees"


def test_a_run_dir_of_another_config_is_not_taken_as_done(tmp_path, monkeypatch):
    fake_sweep(tmp_path)
    monkeypatch.setattr(reproduce, "execute", lambda run, rundir: _write(
        os.path.join(rundir, "results.json"), {"test_accuracy": 0.5}))
    reproduce.reproduce("al_sigmoid", "cpu", str(tmp_path), out=io.StringIO())
    fake_sweep(tmp_path, best={("al_sigmoid", "al"): 10.0})  # the sweep now picks x10
    with pytest.raises(reproduce.StaleRunError, match="sigmoid_mlp_al_s0 holds a finished run "
                                                      "of another configuration"):
        reproduce.reproduce("al_sigmoid", "cpu", str(tmp_path), out=io.StringIO())


def test_binary_reports_a_pending_sweep_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--table=wt5.2", "--scale=cpu", f"--workdir={tmp_path}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--table=lr_sweep --scale=cpu" in err
    assert not (tmp_path / "wt5.2").exists()  # nothing started
