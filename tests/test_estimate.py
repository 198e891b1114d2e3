"""reproduce --dry_run's time estimate: measured cpu-scale runs, scaled paper-scale runs."""

import io
import json

import pytest

from experiments import reproduce
from experiments.paper import _estimate, _tables_cpu, tables


@pytest.fixture
def walls(tmp_path, monkeypatch):
    """A walls.json with three AlexNet runs of wt5.2 and a run wt5.5 shares with wt5.2."""
    data = {"wt5.2": {"alexnet_mnist_fa_s0": {"wall_time_s": 79.0},
                      "alexnet_mnist_bp_s0": {"wall_time_s": 60.0},
                      "alexnet_mnist_bp_s1": {"wall_time_s": 66.0},
                      "resnet18_cifar10_bp_s0": {"wall_time_s": 80.0}},
            "wt5.5": {"resnet18_cifar10_bp_s0": {"wall_time_s": 0.0,
                                                 "shared_with": "wt5.2/resnet18_cifar10_bp_s0"}}}
    path = tmp_path / "walls.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(_estimate, "WALLS", str(path))
    _estimate.measured.cache_clear()
    _estimate._per_example_epoch.cache_clear()
    yield data
    _estimate.measured.cache_clear()
    _estimate._per_example_epoch.cache_clear()


def _run(tid, scale, name):
    with _tables_cpu.pending_allowed():
        return next(r for r in tables.runs(tid, scale) if r.name == name)


def test_cpu_runs_use_their_measured_wall_time(walls):
    assert _estimate.estimate("wt5.2", _run("wt5.2", "cpu", "alexnet_mnist_fa_s0"), "cpu") == 79.0
    shared = _run("wt5.5", "cpu", "resnet18_cifar10_bp_s0")
    assert _estimate.estimate("wt5.5", shared, "cpu") == 80.0  # the run it shares


def test_paper_run_scaled_from_the_per_example_epoch_cost(walls):
    cpu = _run("wt5.2", "cpu", "alexnet_mnist_fa_s0").config
    n, epochs, width = 6000, cpu.epochs, cpu.model_kwargs.width_multiplier
    assert cpu.dataset_options.train_examples == n and width == 0.125
    median = sorted(w / (epochs * n) for w in (79.0, 60.0, 66.0))[1]  # 66 s run
    run = _run("wt5.2", "paper", "alexnet_mnist_fa_s0")
    c = run.config
    assert c.model == "alexnet" and c.dataset == "mnist"
    want = median * c.epochs * 60000 * (c.model_kwargs.get("width_multiplier", 1.0) / width) ** 2
    assert _estimate.estimate("wt5.2", run, "paper") == pytest.approx(want, rel=1e-9)
    # ResNet-34 counts as twice ResNet-18 (one measured run: 80 s for its epochs x examples)
    r34 = _run("wt5.2", "paper", "resnet34_cifar10_bp_s0").config
    r18 = _run("wt5.2", "cpu", "resnet18_cifar10_bp_s0").config
    n18 = r18.dataset_options.train_examples
    want = (2 * 80.0 / (r18.epochs * n18) * r34.epochs * 50000 * 32 * 32 * 3 / (28 * 28)
            * (1.0 / r18.model_kwargs.width_multiplier) ** 2)
    got = _estimate.estimate("wt5.2", _run("wt5.2", "paper", "resnet34_cifar10_bp_s0"), "paper")
    assert got == pytest.approx(want, rel=1e-9)


def test_train_size_follows_validation_and_subsets():
    c = _run("lr_sweep", "cpu", "resnet_bp_x1_s0").config
    assert _estimate.train_size(c) == _tables_cpu.FAMILIES["resnet"].train_examples == 12000
    c.dataset_options = {"validation": 0.1}
    assert _estimate.train_size(c) == 54000


def test_format():
    assert [_estimate.fmt(s) for s in (None, 42, 720, 4 * 3600, 5 * 86400, 800 * 86400)] == \
        ["unknown", "~42 s", "~12 min", "~4.0 h", "~5 days", "~2 years"]


def test_dry_run_prints_a_table_estimate(tmp_path, walls):
    out = io.StringIO()
    reproduce.reproduce("wt5.5", "cpu", str(tmp_path), dry_run=True, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[todo] wt5.5/resnet18_cifar10_bp_s0:")
    assert lines[0].endswith("| est. ~80 s")  # shared with wt5.2's measured run
    assert any(ln.startswith("wt5.5: 12 of 12 runs to do, estimated ") for ln in lines)
    assert "until the lr_sweep table has run" in lines[-1]
