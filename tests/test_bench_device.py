"""experiments/bench/bench_device.py run in-process on CPU at tiny settings.

Only the MLP: LeNet's eager init and ResNet-18's compile (~30 s here) would not fit the
suite's time; the script handles every model through the same code path.
"""

import json
import statistics
from types import SimpleNamespace

import jax
import pytest
from absl import app, flags
from absl.testing import flagsaver

from experiments.bench import bench_device

MLP_LAYERS = ((784, 1024), (1024, 1024), (1024, 10))


def _run(tmp_path, capsys, *args):
    out = tmp_path / "bench.json"
    with flagsaver.flagsaver():
        flags.FLAGS(["bench_device", f"--out={out}", *args])
        bench_device.main(["bench_device"])
    return json.loads(out.read_text()), capsys.readouterr().out


def _mlp_bp_flops(batch: int, *, first_input_grad: bool) -> int:
    """XLA's count of the MLP's SGD-momentum BP step, by hand: a dot of (m x k)(k x n) is
    2mkn flops. Forward: one dot per layer; backward: the weight cotangent of every layer
    and the input cotangent of every layer but the first (the image is not differentiated,
    so JAX never emits that product); SGD momentum is 4 element-wise flops per parameter
    (m <- g + 0.9 m: 2, u = -lr m: 1, p + u: 1). Not counted here: the element-wise work per
    sample (bias add, ReLU and its derivative, bias cotangent: about 6 flops per hidden unit,
    measured 12.4k per sample, 0.13 % of the step)."""
    macs = sum(i * o for i, o in MLP_LAYERS)
    first = MLP_LAYERS[0][0] * MLP_LAYERS[0][1]
    params = macs + sum(o for _, o in MLP_LAYERS)
    return 2 * batch * (3 * macs - (0 if first_input_grad else first)) + 4 * params


def test_mlp_report_against_hand_counts(tmp_path, capsys):
    batch, peak = 32, 0.5
    rep, out = _run(tmp_path, capsys, "--models=mlp", "--rules=bp,fa", f"--batch={batch}",
                    "--steps=2", "--rounds=3", "--warmup=1", f"--peak_tflops={peak}")
    dev = jax.local_devices()[0]
    assert (rep["device_kind"], rep["platform"], rep["jax"]) == (dev.device_kind, dev.platform,
                                                                 jax.__version__)
    assert rep["math"] == "float32" and rep["peak_source"] == "--peak_tflops"
    rows = {r["rule"]: r for r in rep["results"]}
    assert sorted(rows) == ["bp", "fa"] and rep["skipped"] == []
    bp = rows["bp"]
    want = _mlp_bp_flops(batch, first_input_grad=False)
    assert bp["flops"] == pytest.approx(want, rel=0.01)
    assert bp["flops_hlo"] == pytest.approx(want, rel=0.01)  # the unoptimized HLO's count
    # Counting the first layer's input cotangent too would be 16 % high: XLA does not count it.
    assert bp["flops"] < 0.9 * _mlp_bp_flops(batch, first_input_grad=True)
    # FA runs the same products as BP (B in place of W^T, same shapes); B is not trained.
    assert rows["fa"]["flops"] == pytest.approx(bp["flops"], rel=1e-3)
    for row in rows.values():
        assert len(row["round_step_ms"]) == 3
        assert row["step_ms"] == pytest.approx(statistics.median(row["round_step_ms"]))
        sec = row["step_ms"] / 1e3
        assert row["samples_per_s"] == pytest.approx(batch / sec)
        assert row["achieved_tflops"] == pytest.approx(row["flops"] / sec / 1e12)
        assert row["frac_of_peak"] == pytest.approx(row["achieved_tflops"] / peak)
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("mlp ")]
    assert [ln[1] for ln in lines] == ["bp", "fa"]
    assert float(lines[0][4]) == pytest.approx(bp["samples_per_s"], abs=0.06)


def test_budget_precision_and_bad_names(tmp_path, capsys):
    rep, out = _run(tmp_path, capsys, "--models=mlp,lenet", "--rules=bp,kp", "--budget_s=0",
                    "--precision=highest")
    assert rep["results"] == []
    assert [(s["model"], s["rule"]) for s in rep["skipped"]] == [
        ("mlp", "bp"), ("mlp", "kp"), ("lenet", "bp"), ("lenet", "kp")]
    assert all("budget_s=0.0" in s["why"] for s in rep["skipped"])
    assert "skipped lenet/kp: budget_s=0.0 spent" in out
    assert rep["jax_default_matmul_precision"] == "highest"
    assert jax.config.jax_default_matmul_precision is None  # restored after the run
    for bad, named in (("--models=mlp,vgg", "mlp, lenet, resnet18"), ("--rules=bp,xx", "asap")):
        with pytest.raises(app.UsageError, match=named):
            _run(tmp_path, capsys, bad)


def test_peak_table_and_precision():
    gpu = lambda cc: SimpleNamespace(platform="gpu", compute_capability=cc)  # noqa: E731
    assert bench_device.math_precision(gpu("9.0"), "default") == "tf32"
    assert bench_device.math_precision(gpu("9.0"), "highest") == "float32"
    assert bench_device.math_precision(gpu("7.0"), "default") == "float32"  # Volta: no TF32
    assert bench_device.math_precision(jax.local_devices()[0], "default") == "float32"  # CPU
    assert bench_device.table_peak("NVIDIA H200", "tf32") == 494.7
    assert bench_device.table_peak("NVIDIA H200 NVL", "float32") == 60.0
    assert bench_device.table_peak("NVIDIA H100 PCIe", "bf16") == 756.0
    assert bench_device.table_peak("NVIDIA H100 80GB HBM3", "float32") == 67.0
    assert bench_device.table_peak("cpu", "float32") is None
