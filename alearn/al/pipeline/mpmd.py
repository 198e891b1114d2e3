"""MPMD engine of the AL pipeline: one jitted stage step per device, one host thread each.

Stage k's blocks run as one ``jax.jit`` program committed to device k, its state (the
blocks' own pytrees, no packing) donated and updated in place; the hand-over ``(s_i, y_i)``
is a ``jax.device_put`` to device k + 1. Each stage has its own host thread, so while
device 1 trains micro-batch m, device 0 already trains m + 1: the data dependencies *are*
the schedule (work item (k, m) waits for (k − 1, m) and (k, m − 1) only), and the parameters
equal sequential AL exactly, bubbles included — a stage with no micro-batch runs nothing,
so there is nothing to mask. The host walks the same lock-step tick order as the SPMD
engine (at tick t stage k gets micro-batch t − k) so logs and accounting agree.

Per micro-batch and stage the host pays one jit dispatch and one device_put (on the
stage's own host thread, see ``_pools``); per tick a stage costs its block step plus the
hand-over copy of ``(s_i, y_i)``. Devices are local (one process): across processes the
SPMD engine (``ppermute``) is used.
``compiler_options`` go to every stage's ``jax.jit`` (e.g. on a CPU host with one core per
stage, ``{"xla_cpu_multi_thread_eigen": False}`` keeps each stage on one thread).
"""

from __future__ import annotations

import concurrent.futures as cf
import weakref
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alearn.al.pipeline.log import PendingLog, TickLog


class MpmdEngine:
    """Stage k = ``groups[k]`` on ``devices[k]``; see the module docstring."""

    kind = "mpmd"

    def __init__(self, steps: Sequence, states: Sequence[Any], groups, metric_keys,
                 metric_names: tuple, devices: Sequence[jax.Device],
                 compiler_options: dict | None = None):
        self.groups, self.devices = groups, list(devices)[:len(groups)]
        self.metric_names = metric_names
        # metric_names enumerates (block, key) in block order: slot j of the metric vector.
        slots = [(b, key) for b, ks in enumerate(metric_keys) for key in ks]
        n_metrics = max(1, len(slots))

        def stage_fn(k):
            blocks = groups[k]
            keys = [(b, key, j) for j, (b, key) in enumerate(slots) if b in blocks]

            def run(sts, s, y):
                new, out = [], {}
                for b, st in zip(blocks, sts):
                    st, s, y, m = steps[b](st, s, y)
                    new.append(st)
                    out[b] = m
                met = jnp.full((n_metrics,), jnp.nan, jnp.float32)
                for b, key, j in keys:
                    met = met.at[j].set(jnp.asarray(out[b][key], jnp.float32))
                return tuple(new), s, y, met
            return jax.jit(run, donate_argnums=0, compiler_options=compiler_options)

        self._fns = [stage_fn(k) for k in range(len(groups))]
        # Copies (never aliases of the caller's arrays): the stage steps donate them.
        self.states = [jax.device_put(tuple(states[b] for b in g), d, may_alias=False)
                       for g, d in zip(groups, self.devices)]
        self._inbox: list = [None] * len(groups)  # (future (s, y), micro id) for stage k
        # One host thread per stage: on XLA:CPU a jitted call returns only once its inputs
        # are ready (measured: the call of stage k blocks for the producer's whole step), so
        # a single dispatching thread would serialise the stages. Each stage's thread runs
        # its jobs in submission (micro-batch) order and waits only for its own inputs.
        self._pools = [cf.ThreadPoolExecutor(1, thread_name_prefix=f"al-stage{k}")
                       for k in range(len(groups) if len(groups) > 1 else 0)]
        self._last: list = [None] * len(groups)  # the last job submitted to each stage
        weakref.finalize(self, _shutdown, self._pools)

    @property
    def n_stages(self) -> int:
        return len(self.groups)

    def reset_pipeline(self) -> None:
        """Drops the in-flight hand-overs."""
        self._inbox = [None] * self.n_stages

    def _job(self, k: int, inputs: Any) -> tuple:
        """Stage k's step on one micro-batch (runs on stage k's thread)."""
        s, y = inputs.result() if isinstance(inputs, cf.Future) else inputs
        self.states[k], s, y, met = self._fns[k](self.states[k], s, y)
        if k + 1 < self.n_stages:
            s, y = jax.device_put((s, y), self.devices[k + 1])
        return (s, y), met

    def _submit(self, k: int, inputs: Any) -> cf.Future:
        """Stage k's job on its thread; with one stage inline (nothing to overlap, and the
        calling thread runs it as the sequential trainer would)."""
        if self.n_stages > 1:
            return self._pools[k].submit(self._job, k, inputs)
        job = cf.Future()
        job.set_result(self._job(k, inputs))
        return job

    def wait(self) -> None:
        """Blocks until every submitted step has run and its state is ready."""
        for k, job in enumerate(self._last):
            if job is not None:
                job.result()
        jax.block_until_ready(self.states)

    def dispatch(self, xs: Any, ys: Any, valid: np.ndarray, ids: np.ndarray,
                 start: int) -> PendingLog:
        """Dispatches ``len(valid)`` ticks (stage 0 fed ``xs[t], ys[t]`` when ``valid[t]``)."""
        n, t_count = self.n_stages, len(valid)
        v_log = np.zeros((n, t_count), bool)
        id_log = np.full((n, t_count), -1, np.int32)
        mets = []  # (k, t, device metric vector)
        for t in range(t_count):
            if valid[t]:
                self._inbox[0] = ((jax.tree.map(lambda a: a[t], xs),
                                   jax.tree.map(lambda a: a[t], ys)), int(ids[t]))
            for k in reversed(range(n)):  # stage k consumes what k − 1 produced last tick
                item, self._inbox[k] = self._inbox[k], None
                if item is None:
                    continue
                inputs, mid = item
                job = self._submit(k, inputs)
                self._last[k] = job
                v_log[k, t], id_log[k, t] = True, mid
                mets.append((k, t, job))
                if k + 1 < n:
                    self._inbox[k + 1] = (_Handover(job), mid)
        names = self.metric_names

        def fetch() -> TickLog:
            met = np.full((n, t_count, max(1, len(names))), np.nan, np.float32)
            host = jax.device_get([job.result()[1] for _, _, job in mets])
            for (k, t, _), h in zip(mets, host):
                met[k, t] = h
            return TickLog(met, v_log, id_log, names=names, start=start)
        return PendingLog(fetch)

    def block_states(self) -> list[Any]:
        """Every block's state as host numpy pytrees (waits for the dispatched steps)."""
        self.wait()
        out = []
        for host in jax.device_get(self.states):
            out.extend(host)
        return out

    def placement(self) -> list[jax.Device]:
        """The device of each stage."""
        return list(self.devices)



class _Handover(cf.Future):
    """The ``(s, y)`` a stage's job hands to the next stage (a view of the job's future)."""

    def __init__(self, job: cf.Future):
        super().__init__()
        self._job = job

    def result(self, timeout=None):
        return self._job.result(timeout)[0]


def _shutdown(pools) -> None:
    for pool in pools:
        pool.shutdown(wait=False)
