"""The training *binary* on 2 processes (loopback, 2 CPU devices each, gloo): joined by
``--config.distributed=auto`` from the coordinator environment variables; both processes
report the same result, equal (to float rounding) to a single-process run; only process 0
writes metrics and results."""

import json
import os
import subprocess
import sys

import pytest
from _procs import communicate_all, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=tests/_kill_config.py", "--config.epochs=2", "--config.distributed=auto"]


def _env(devices, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
    return env


def _summary(stdout: str) -> dict:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


def test_binary_on_two_processes_agrees(tmp_path):
    wd, single = str(tmp_path / "multi"), str(tmp_path / "single")
    port = free_port()
    cmd = [sys.executable, "-m", "experiments.train", *ARGS]
    procs = [subprocess.Popen(cmd + [f"--workdir={wd}"], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                       JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    ref = subprocess.run(cmd + [f"--workdir={single}"], cwd=ROOT, env=_env(4), text=True,
                         capture_output=True, timeout=300)
    outs = communicate_all(procs, 300)
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i}:\n{outs[i][1][-3000:]}"
    assert ref.returncode == 0, ref.stderr[-3000:]
    got = [_summary(o) for o, _ in outs]
    assert [g["process"] for g in got] == [0, 1] and got[0]["processes"] == 2
    assert got[0]["test_accuracy"] == got[1]["test_accuracy"]
    assert got[0]["test_loss"] == got[1]["test_loss"]
    want = _summary(ref.stdout)
    assert "process" not in want
    assert got[0]["test_loss"] == pytest.approx(want["test_loss"], rel=1e-4)
    assert got[0]["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=1 / 64)
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        assert [json.loads(l)["epoch"] for l in f] == [1, 2]  # written once, by process 0
    with open(os.path.join(wd, "results.json")) as f:
        assert json.load(f)["num_devices"] == 4
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["1", "2"]
