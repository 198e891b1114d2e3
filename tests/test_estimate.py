"""reproduce --dry_run's time estimate: measured cpu-scale runs, scaled paper-scale runs."""

import io

from experiments import _estimate, reproduce, tables


def test_cpu_runs_use_their_measured_wall_time():
    run = next(r for r in tables.runs("wt5.2", "cpu") if r.name == "alexnet_mnist_fa")
    assert _estimate.estimate("wt5.2", run, "cpu") == 79.0  # docs/results: wall (s) 79


def test_paper_run_scaled_from_the_per_epoch_cost():
    # alexnet at cpu width 0.125, 1 epoch of mnist5k: wt5.1 256, 138, 162; wt5.2 179, 138,
    # 79, 104, 123 s -> median 130.5 s per epoch.
    per_epoch = sorted([256, 138, 162, 179, 138, 79, 104, 123])
    median = (per_epoch[3] + per_epoch[4]) / 2
    run = next(r for r in tables.runs("wt5.2", "paper") if r.name == "alexnet_mnist_fa")
    c = run.config
    assert c.model == "alexnet" and c.dataset == "mnist"
    width = c.model_kwargs.get("width_multiplier", 1.0)
    want = median * c.epochs * 60000 / 4000 * (width / 0.125) ** 2
    assert abs(_estimate.estimate("wt5.2", run, "paper") - want) < 1e-6 * want


def test_format():
    assert [_estimate.fmt(s) for s in (None, 42, 720, 4 * 3600, 5 * 86400, 800 * 86400)] == \
        ["unknown", "~42 s", "~12 min", "~4.0 h", "~5 days", "~2 years"]


def test_dry_run_prints_a_table_estimate(tmp_path):
    out = io.StringIO()
    reproduce.reproduce("wt3.1", "cpu", str(tmp_path), dry_run=True, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("| est. ~26 s")  # linear_foa, measured 26 s
    # 26 + 7 + 8 + 8 s measured
    assert lines[-1].startswith("wt3.1: 4 of 4 runs to do, estimated ~49 s (measured")
