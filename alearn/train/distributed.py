"""``config.distributed``: join a multi-process run when the environment describes one.

``"auto"`` calls ``jax.distributed.initialize`` when the environment describes a cluster:
the coordinator variables (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), a SLURM job step with more than one task, or a multi-worker Cloud TPU
slice (``TPU_WORKER_HOSTNAMES`` / ``TPU_PROCESS_ADDRESSES`` with several hosts). ``"off"``
never does. Must run before anything touches a JAX backend (the binary calls it first).
On CPU (``JAX_PLATFORMS=cpu``) cross-process collectives use gloo.

With several processes the data-parallel mesh spans every process's devices; each process
reads the same (seeded) batches and feeds its devices their slice; only process 0 writes
metrics, results and plots; orbax writes checkpoints from all processes.
"""

from __future__ import annotations

import os

from absl import logging

MODES = ("auto", "off")


def cluster_kind(env: dict | None = None) -> str | None:
    """Which cluster the environment describes ("coordinator", "slurm", "tpu"), or None."""
    env = os.environ if env is None else env
    if all(env.get(k) for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                                "JAX_PROCESS_ID")):
        return "coordinator"
    if env.get("SLURM_JOB_ID") and env.get("SLURM_STEP_NODELIST") and \
            int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return "tpu"
    return None


def initialize(mode: str = "auto") -> bool:
    """Initialises ``jax.distributed`` per ``mode``; returns whether this is a multi-process run.

    Raises:
      ValueError: unknown mode.
    """
    import jax  # pylint: disable=import-outside-toplevel

    mode = str(mode).lower()
    if mode not in MODES:
        from alearn.train.errors import ConfigError  # pylint: disable=import-outside-toplevel
        raise ConfigError(f"unknown distributed {mode!r}; choose one of: {', '.join(MODES)}")
    kind = cluster_kind() if mode == "auto" else None
    if kind is None:
        return False
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if kind == "coordinator":
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()
    logging.info("distributed (%s): process %d of %d, %d devices in all", kind,
                 jax.process_index(), jax.process_count(), jax.device_count())
    return jax.process_count() > 1
