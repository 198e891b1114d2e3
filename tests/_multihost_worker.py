"""One process of the 2-process pipeline test (launched by tests/test_pipeline_multihost.py).

Usage: python tests/_multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz [DEVICES]

Each process owns DEVICES (default 2) CPU devices; the pipeline's ``stage`` axis spans all
processes (stages 0..DEVICES-1 on process 0, and so on), so the ppermute hand-over between
the last stage of one process and the first of the next crosses processes (gloo on CPU).
Process 0 writes the trained block states to OUT.npz.
"""

import os
import sys
import time

T0 = time.time()

PID, NPROC, PORT, OUT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
NDEV = int(sys.argv[5]) if len(sys.argv) > 5 else 2
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={NDEV}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")  # worker only, never alearn
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{PORT}", num_processes=NPROC,
                           process_id=PID, initialization_timeout=60)

import numpy as np  # noqa: E402

import _pipeline_toy as toy  # noqa: E402
from alearn.al.pipeline import Pipeline  # noqa: E402


def main():
    assert jax.process_count() == NPROC, jax.process_count()
    states, (xs, ys) = toy.problem()
    pl = Pipeline([toy.step] * len(states), states, (xs[0], ys[0]), stages=NPROC * NDEV)
    for lo, hi in toy.CALLS:
        pl.train(xs[lo:hi], ys[lo:hi])
    pl.flush()
    got = pl.block_states()
    sched = pl.schedule()
    if PID == 0:
        leaves = jax.tree.leaves(got)
        np.savez(OUT, *leaves, ticks=sched.ticks, busy=np.asarray(sched.busy),
                 processes=jax.process_count(), devices=len(jax.devices()))
    print(f'process {PID}: done in {time.time() - T0:.1f} s', file=sys.stderr, flush=True)
    jax.distributed.shutdown()
    print(f'process {PID}: shut down at {time.time() - T0:.1f} s', file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
