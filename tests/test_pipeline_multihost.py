"""Multi-host pipeline: 2 processes on loopback (2 CPU devices each, gloo collectives) train
the 4-stage toy pipeline across processes and match the single-process run exactly."""

import os
import subprocess
import sys

import jax
import numpy as np

import _pipeline_toy as toy
from _procs import communicate_all, free_port
from alearn.al.pipeline import Pipeline

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_multihost_worker.py")
TIMEOUT_S = 240  # wall-clock bound of the whole 2-process run (two cores, shared machine)


def test_two_processes_match_single_process(tmp_path):
    out = tmp_path / "states.npz"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, WORKER, str(i), "2", str(port), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    # The single-process reference runs while the workers start (8 local devices, 4 stages).
    states, (xs, ys) = toy.problem()
    pl = Pipeline([toy.step] * 4, states, (xs[0], ys[0]), stages=4)
    for lo, hi in toy.CALLS:
        pl.train(xs[lo:hi], ys[lo:hi])
    pl.flush()
    want = jax.tree.leaves(pl.block_states())
    logs = [out for out, _ in communicate_all(procs, TIMEOUT_S)]
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"worker {i} failed (rc {p.returncode}):\n{logs[i][-3000:]}"
    got = np.load(out)
    assert int(got["processes"]) == 2 and int(got["devices"]) == 4
    n = toy.CALLS[-1][1]
    assert int(got["ticks"]) == n + 4 - 1
    assert list(got["busy"]) == [n] * 4
    assert len(got.files) - 4 == len(want)
    for i, w in enumerate(want):
        np.testing.assert_allclose(got[f"arr_{i}"], np.asarray(w), rtol=1e-6, atol=1e-7)
