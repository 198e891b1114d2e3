"""SIGKILL at >= 20 instants (random and inside checkpoint saves): every chain of restarts of
the same command ends with results, metrics and final state identical to an uninterrupted
run. The harness (tests/_kill_harness.py) forks training children of the real binary."""

import json
import os
import signal
import subprocess
import sys

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_kill_harness.py")


def test_sigkill_anywhere_then_resume_is_identical(tmp_path):
    out = tmp_path / "kill.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, HARNESS, str(out), "--kills=20", "--seed=1"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["kills"] >= 20  # runs that ended before their instant are not counted
    killed = [e for e in s["log"] if e["exit"] == -signal.SIGKILL]
    assert all(e["exit"] in (0, -signal.SIGKILL) for e in s["log"])
    assert s["chains"] and all(c["final_exit"] == 0 and c["identical"] for c in s["chains"])
    # The kills are spread: over many epochs, and into saves (a checkpoint's temporary
    # directory on disk at the kill) including the deterministic in-save hooks.
    landed = [e.get("at_kill", e["after"]) for e in killed]
    assert len({x["epochs_logged"] for x in landed}) >= 4
    assert sum(any(c.endswith("orbax-checkpoint-tmp") for c in x["checkpoints"])
               for x in landed) >= 3
    hooks = {e["point"].split(":")[0] for e in killed}
    assert {"finalize", "write", "metrics", "results"} <= hooks
