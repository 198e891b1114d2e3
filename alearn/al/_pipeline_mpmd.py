"""MPMD engine of the AL pipeline: one jitted stage step per device, dispatched asynchronously.

Stage k's blocks run as one ``jax.jit`` program committed to device k, its state (the
blocks' own pytrees, no packing) donated and updated in place; the hand-over ``(s_i, y_i)``
is a ``jax.device_put`` to device k + 1. JAX dispatches asynchronously, so while device 1
trains micro-batch m, device 0 already trains m + 1: the data dependencies *are* the
schedule (work item (k, m) waits for (k − 1, m) and (k, m − 1) only), and the parameters
equal sequential AL exactly, bubbles included — a stage with no micro-batch runs nothing,
so there is nothing to mask. The host walks the same lock-step tick order as the SPMD
engine (at tick t stage k gets micro-batch t − k) so logs and accounting agree.

Per micro-batch and stage the host pays one jit dispatch and one device_put; per tick a
stage costs its block step plus the hand-over copy of ``(s_i, y_i)``. Devices are local
(one process): across processes the SPMD engine (``ppermute``) is used.
``compiler_options`` go to every stage's ``jax.jit`` (e.g. on a CPU host with one core per
stage, ``{"xla_cpu_multi_thread_eigen": False}`` keeps each stage on one thread).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alearn.al._pipeline_log import PendingLog, TickLog


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
        self._inbox: list = [None] * len(groups)  # (s, y, micro id) waiting for stage k

    @property
    def n_stages(self) -> int:
        return len(self.groups)

    def reset_pipeline(self) -> None:
        """Drops the in-flight hand-overs."""
        self._inbox = [None] * self.n_stages

    def pending(self) -> bool:
        """Whether some hand-over is still waiting for its stage."""
        return any(a is not None for a in self._inbox[1:])

    def dispatch(self, xs: Any, ys: Any, valid: np.ndarray, ids: np.ndarray,
                 start: int) -> PendingLog:
        """Dispatches ``len(valid)`` ticks (stage 0 fed ``xs[t], ys[t]`` when ``valid[t]``)."""
        n, t_count = self.n_stages, len(valid)
        v_log = np.zeros((n, t_count), bool)
        id_log = np.full((n, t_count), -1, np.int32)
        mets = []  # (k, t, device metric vector)
        for t in range(t_count):
            if valid[t]:
                self._inbox[0] = (jax.tree.map(lambda a: a[t], xs),
                                  jax.tree.map(lambda a: a[t], ys), int(ids[t]))
            for k in reversed(range(n)):  # stage k consumes what k − 1 produced last tick
                item, self._inbox[k] = self._inbox[k], None
                if item is None:
                    continue
                s, y, mid = item
                self.states[k], s, y, met = self._fns[k](self.states[k], s, y)
                v_log[k, t], id_log[k, t] = True, mid
                mets.append((k, t, met))
                if k + 1 < n:
                    self._inbox[k + 1] = (*jax.device_put((s, y), self.devices[k + 1]), mid)
        names = self.metric_names

        def fetch() -> TickLog:
            met = np.full((n, t_count, max(1, len(names))), np.nan, np.float32)
            host = jax.device_get([m for _, _, m in mets])
            for (k, t, _), h in zip(mets, host):
                met[k, t] = h
            return TickLog(met, v_log, id_log, names=names, start=start)
        return PendingLog(fetch)

    def block_states(self) -> list[Any]:
        """Every block's state as host numpy pytrees (waits for the dispatched steps)."""
        out = []
        for host in jax.device_get(self.states):
            out.extend(host)
        return out

    def placement(self) -> list[jax.Device]:
        """The device of each stage."""
        return list(self.devices)

