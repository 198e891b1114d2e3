"""Oracles for experiments.reproduce / experiments.report (no training: execute is stubbed)."""

import io
import json
import os

import pytest

from experiments import report, reproduce
from experiments.paper import paper_results, tables


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


@pytest.fixture(autouse=True)
def _pending_sweep_ok(tmp_path):
    """cpu-scale runs read their lr from the sweep; with none run, the paper's lr (x1)."""
    from experiments.paper import _tables_cpu
    _tables_cpu.set_workdir(str(tmp_path / "no_sweep"), allow_pending=True)
    yield
    _tables_cpu.set_workdir(None)


@pytest.mark.parametrize("tid", tables.TABLE_IDS)
def test_every_table_has_runs_at_its_scales(tid):
    from experiments.paper import _tables_cpu

    cpu, paper = tables.runs(tid, "cpu"), tables.runs(tid, "paper")
    assert cpu or paper
    assert tid != "lr_sweep" or not paper  # the sweep is the cpu scale's rule only
    for runs in (cpu, paper):
        names = [r.name for r in runs]
        assert len(names) == len(set(names)), names  # one directory per run
    if tid == "al_seq":  # sequence models: sequential Fashion-MNIST / text (_tables_seq.py)
        assert {r.config.dataset for r in cpu} == {"fashion_mnist"}
        assert all(r.config.epochs == 8 for r in cpu) and len(cpu) == 4 * 3  # 3 seeds
        assert {r.config.dataset for r in paper} == {"ag_news_subset", "imdb_reviews", "sst2"}
        return
    for r in cpu:
        if r.config is not None:  # the cpu scale: Fashion-MNIST, the family's epochs
            family = _tables_cpu.FAMILIES[_tables_cpu.family_of(r.config.model)]
            assert r.config.dataset == "fashion_mnist"
            assert r.config.epochs in (family.epochs, _tables_cpu.sweep_epochs(
                _tables_cpu.family_of(r.config.model)))
    for r in paper:
        if r.config is not None:
            assert r.config.dataset != "fashion_mnist" and r.config.epochs == 200


def test_paper_numbers_cover_the_paper_scale_cells():
    for tid in tables.TABLE_IDS:
        cells = {(r.row, r.col) for r in tables.runs(tid, "paper")}
        paper = paper_results.PAPER.get(tid, {})
        if tables.TABLES[tid].metric == "accuracy" and paper:
            missing = [c for c in cells if c not in paper and c[1] not in ("HSIC",)]
            assert not missing, (tid, missing)
    assert paper_results.PAPER["wt5.2"][("CIFAR-10 / ResNet-18", "ASAP")] == 92.19
    assert paper_results.PAPER["wt5.4"][("ASAP", "λ=5e-3")] == 91.54


def test_dry_run_lists_without_running(tmp_path, monkeypatch):
    from experiments.paper import _estimate

    monkeypatch.setattr(reproduce, "execute", lambda *a: pytest.fail("dry run executed"))
    walls = tmp_path / "walls.json"  # one measured AlexNet run: every AlexNet row estimated
    walls.write_text(json.dumps({"wt5.2": {"alexnet_mnist_bp_s0": {"wall_time_s": 60.0}}}))
    monkeypatch.setattr(_estimate, "WALLS", str(walls))
    _estimate.measured.cache_clear()
    _estimate._per_example_epoch.cache_clear()
    work = tmp_path / "work"
    out = io.StringIO()
    items = reproduce.reproduce("wt5.2", "paper", str(work), dry_run=True, out=out)
    _estimate.measured.cache_clear()
    _estimate._per_example_epoch.cache_clear()
    lines = out.getvalue().strip().splitlines()
    assert len(lines) - 1 == len(items) == 70  # 14 Table 5.2 rows x 5 rules, + the estimate
    assert lines[-1].startswith("wt5.2: 70 of 70 runs to do, estimated ~")
    assert "wt5.2/cifar10" not in lines[0] and "[todo] wt5.2/alexnet_mnist_bp_s0" in lines[0]
    assert lines[0].endswith("| est. ~9 days")  # 60 s / (10 ep x 6000) x 200 x 60000 x 8² s
    assert not work.exists()


def test_unknown_table_lists_valid_ids(capsys):
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--table=5.9", "--workdir=/tmp/x"])
    err = capsys.readouterr().err
    assert "unknown table id(s) 5.9" in err
    for tid in tables.TABLE_IDS:
        assert tid in err


def test_bare_thesis_numbers(capsys):
    assert reproduce.parse_args(["--table=5.2", "--workdir=w"]).tables == ("wt5.2",)
    assert reproduce.parse_args(["--table=3.2", "--workdir=w"]).tables == ("al3.2",)
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--table=3.1", "--workdir=w"])
    err = capsys.readouterr().err
    assert "ambiguous" in err and "al3.1" in err and "wt3.1" in err


def test_paper_scale_without_data_names_dataset_and_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_data"))
    monkeypatch.setattr(reproduce, "execute", lambda *a: pytest.fail("a run started"))
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as e:  # a usage error: status 2, message, no traceback
        reproduce.main(["--table=wt5.3", "--scale=paper", f"--workdir={work}"])
    assert e.value.code == 2
    msg = capsys.readouterr().err
    assert msg.startswith("error: No run was started") and "Traceback" not in msg
    assert "'cifar10'" in msg and "tfds build cifar10" in msg
    assert not work.exists()
    # Data present (an empty version folder passes the cheap check): no error.
    (tmp_path / "no_data" / "cifar10" / "3.0.2").mkdir(parents=True)
    reproduce.check_datasets(tables.runs("wt5.3", "paper"), None)


def _record_runs(monkeypatch) -> list:
    """Replaces ``reproduce.execute`` by one that records the run's name and writes a result."""
    calls = []

    def fake(run, rundir):
        calls.append(run.name)
        _write(os.path.join(rundir, "results.json"), {"test_accuracy": 0.5})

    monkeypatch.setattr(reproduce, "execute", fake)
    return calls


def test_skips_runs_whose_results_exist(tmp_path, monkeypatch):
    calls = _record_runs(monkeypatch)
    fake_sweep(tmp_path)
    runs = tables.runs("al_sigmoid", "cpu")
    _write(str(tmp_path / "al_sigmoid" / runs[0].name / "results.json"), {"test_accuracy": 0.7})
    reproduce.reproduce("al_sigmoid", "cpu", str(tmp_path), out=io.StringIO())
    assert calls == [r.name for r in runs[1:]]
    reproduce.reproduce("al_sigmoid", "cpu", str(tmp_path), out=io.StringIO())  # all done now
    assert calls == [r.name for r in runs[1:]]
    manifest = json.load(open(tmp_path / "al_sigmoid" / "manifest.json"))
    assert manifest["scale"] == "cpu" and set(manifest["runs"]) == {r.name for r in runs[1:]}


def test_runs_filter_runs_only_the_named_prefixes(tmp_path, monkeypatch):
    calls = _record_runs(monkeypatch)
    fake_sweep(tmp_path)
    args = reproduce.parse_args(["--table=wt5.2", "--workdir=w", "--runs=resnet18_nsc, alex"])
    assert args.only == ("resnet18_nsc", "alex")
    reproduce.reproduce("wt5.2", "cpu", str(tmp_path), out=io.StringIO(),
                        only=("resnet18_nsc",))
    assert calls == [f"resnet18_nsc_cifar10_asap_s{s}" for s in (0, 1, 2)]
    manifest = json.load(open(tmp_path / "wt5.2" / "manifest.json"))
    assert manifest["command"].endswith("--runs=resnet18_nsc")


def fake_sweep(workdir, best=None):
    """Writes the lr_sweep's results: factor ``best[(family, method)]`` wins (default: x1)."""
    from experiments.paper import _tables_cpu as cs

    for family, method in cs.SWEPT:
        for x in cs.factors(family, method):
            win = (best or {}).get((family, method), 1.0)
            _write(os.path.join(str(workdir), "lr_sweep",
                                cs.sweep_name(family, method, x) + "_s0", "results.json"),
                   {"test_accuracy": 0.9 if x == win else 0.5})


def test_report_shows_paper_numbers_and_differences(tmp_path):
    _write(str(tmp_path / "wt5.2" / "manifest.json"), {"scale": "paper", "command": "cmd",
                                                       "runs": {}})
    acc = {"alexnet_mnist_bp_s0": 0.9, "alexnet_mnist_fa_s0": 0.95, "alexnet_mnist_kp_s0": 0.8}
    for name, a in acc.items():
        _write(str(tmp_path / "wt5.2" / name / "results.json"), {"test_accuracy": a})
    md = report.render_table("wt5.2", str(tmp_path))
    # 90.00 - 99.59 = -9.59 ; 95.00 - 99.14 = -4.14 ; 80.00 - 99.55 = -19.55
    assert "| MNIST / AlexNet | BP | alexnet x1, mnist, 200 ep, lr 0.03 | 90.00 | 1 | 99.59 | -9.59 |" in md
    assert "| FA | alexnet x1, mnist, 200 ep, lr 0.0001 | 95.00 | 1 | 99.14 | -4.14 |" in md
    assert "| KP | alexnet x1, mnist, 200 ep, lr 0.03 | 80.00 | 1 | 99.55 | -19.55 |" in md
    assert ("| CIFAR-10 / ResNet-18 | ASAP | resnet18 x1, cifar10, 200 ep, lr 0.03 | — | 0 | 92.19 | — |"
            in md)
    assert ("ordering differs — paper BP > KP > FA; ours FA > BP > KP (reversed: FA > BP, "
            "FA > KP)" in md)


def test_ordering_notes_ties_are_not_reversals():
    paper = {("r", "BP"): 95.0, ("r", "FoA"): 93.0}
    assert "no reversal, but ties" in report.ordering_notes({"r": {"BP": 31.7, "FoA": 31.7}},
                                                            paper)[0]
    assert "same ordering" in report.ordering_notes({"r": {"BP": 40.0, "FoA": 31.7}}, paper)[0]


def test_report_metafeatures_ratio_difference(tmp_path):
    _write(str(tmp_path / "al3.4" / "manifest.json"), {"scale": "paper", "runs": {}})
    mf = {"AL layer3": {"inter": 1.0, "intra": 0.5, "ratio": 2.0},
          "BP layer3": {"inter": 3.0, "intra": 6.0, "ratio": 0.5}}
    _write(str(tmp_path / "al3.4" / "mlp_cifar10_s0" / "results.json"),
           {"metafeatures": mf, "last_layer": 3, "test_accuracy": {"al": 0.9, "bp": 0.8}})
    md = report.render_table("al3.4", str(tmp_path))
    # paper CIFAR-10 MLP ratios: AL 1.11, BP 0.58 -> differences 0.89 and -0.08
    assert "| 2.00 | 1 | 0.73 | 0.66 | 1.11 | 0.89 |" in md
    assert "| 0.50 | 1 | 39.36 | 67.97 | 0.58 | -0.08 |" in md
    assert "agrees with the paper's claim" in md


def test_extending_example_from_the_readme():
    """The 'Extending' section's rule (docs/notes/reproduce.md): a per-layer pure function."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    import alearn
    from alearn.rules.base import Rule

    @dataclasses.dataclass(frozen=True)
    class ClippedBP(Rule):
        name = "clipped_bp"
        clip: float = 0.01

        def residuals(self, op, x, kernel, feedback, ctx):
            return (x, kernel)

        def backward(self, op, res, g, carrier_g):
            x, w = res
            g = jnp.clip(g, -self.clip, self.clip)
            return op.input_grad(g, w), op.weight_grad(x, g), {}

    model = alearn.models.create("mlp", 10, widths=(16,))
    x = jax.random.normal(jax.random.key(1), (4, 784))
    y = jnp.arange(4)
    v = alearn.init(model, ClippedBP(), jax.random.key(0), x)
    ref = alearn.rule_updates(model, alearn.rules.BP(), v, x, y)
    same = alearn.rule_updates(model, ClippedBP(clip=1e9), v, x, y)  # no clipping: BP exactly
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(ref)):
        assert jnp.allclose(a, b, atol=1e-6)
    clipped = alearn.rule_updates(model, ClippedBP(clip=1e-4), v, x, y)
    k = clipped["params"]["Dense_1"]["kernel"]  # output layer: dW = h^T clip(δ)
    assert not jnp.allclose(k, ref["params"]["Dense_1"]["kernel"], atol=1e-6)
    p0 = v["params"]["Dense_0"]
    h = jax.nn.relu(x @ p0["kernel"] + p0["bias"])  # the output layer's input
    bound = 1e-4 * jnp.abs(h).sum(axis=0)[:, None]  # |Σ_b h_bi clip(δ)_bj| <= 1e-4 Σ_b |h_bi|
    assert bool(jnp.all(jnp.abs(k) <= bound + 1e-9))


def test_dry_run_checks_the_data_and_a_run_stops_before_training(tmp_path, monkeypatch, capsys):
    """Issue 28: ``--dry_run`` says whether the runs' data is on disk, with the command that
    installs it; a real run without it stops before the first run (cpu scale too)."""
    import numpy as np

    from alearn.data import idx

    monkeypatch.setattr(idx, "DEBIAN_DIR", tmp_path / "no_debian_package")
    monkeypatch.setattr(reproduce, "execute", lambda *a: pytest.fail("a run started"))
    monkeypatch.setattr(reproduce, "use_compilation_cache", lambda workdir: None)
    work = tmp_path / "work"
    args = ["--table=lr_sweep", "--scale=cpu", f"--workdir={work}"]
    assert reproduce.main(args + ["--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "data: NOT READY: dataset 'fashion_mnist' is not on disk" in out
    assert "apt-get install dataset-fashion-mnist" in out and "--data_dir=" in out
    with pytest.raises(SystemExit) as e:
        reproduce.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No run was started") and "Traceback" not in err
    assert "apt-get install dataset-fashion-mnist" in err
    assert not (work / "lr_sweep").exists()
    data = tmp_path / "data"  # the four original files in --data_dir: ready
    data.mkdir()
    for images, labels in idx.FILES.values():
        idx.write(data / images, np.zeros((2, 28, 28), np.uint8))
        idx.write(data / labels, np.zeros(2, np.uint8))
    assert reproduce.main(args + ["--dry_run", f"--data_dir={data}"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "data: ready (fashion_mnist)"
