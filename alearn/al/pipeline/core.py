"""The pipeline itself: :class:`Pipeline` runs a chain of block steps over N device stages.

It plans the stages (:mod:`.placement`), picks the engine (:mod:`.mpmd` or :mod:`.spmd`,
see the package docstring) and keeps the lock-step tick accounting both engines share.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging

from alearn.al.pipeline.log import PendingLog, TickLog
from alearn.al.pipeline.mpmd import MpmdEngine
from alearn.al.pipeline.placement import BALANCE, StagePlan, group_blocks, make_mesh, plan
from alearn.al.pipeline.spmd import SpmdEngine, _fill
from alearn.al.schedule import Schedule

StepFn = Callable[..., tuple[Any, Any, Any, dict]]
MODES = ("auto", "mpmd", "spmd")


class Pipeline:
    """Pipelined trainer of a chain of blocks ``step(state, s, y) -> (state, s, y, metrics)``.

    Args:
      steps: one pure step per block; with a data axis (``data > 1``) each is called as
        ``step(state, s, y, axis_name="data")`` and must average its gradients over it.
      states: initial state of every block (any pytree).
      example: one micro-batch ``(x, y_0)`` (arrays or ShapeDtypeStructs, batch first).
      stages: number of pipeline stages N (devices along ``stage``).
      data: devices per stage along ``data`` (data parallelism inside a stage; SPMD only).
      blocks_per_stage: consecutive blocks per stage: counts, ``"flops"`` / ``"time"``
        (balanced by XLA-costed flops / measured step time, see :attr:`plan`), or None
        (equal split).
      devices: devices to use (default ``jax.devices()``, all processes).
      names: block names for errors and metrics (default ``block1`` ...).
      mode: ``"mpmd"``, ``"spmd"`` or ``"auto"`` (see :mod:`alearn.al.pipeline`).
      compiler_options: XLA options for the MPMD stage steps (``jax.jit(...,
        compiler_options=)``). Default for N > 1 CPU stages:
        ``{"xla_cpu_multi_thread_eigen": False}`` (one thread per stage; pass
        ``{"xla_cpu_multi_thread_eigen": True}`` for XLA's shared intra-op pool); none
        otherwise. Both measured in docs/notes/pipeline.md.
    """

    def __init__(self, steps: Sequence[StepFn], states: Sequence[Any], example: tuple,
                 *, stages: int, data: int = 1,
                 blocks_per_stage: Sequence[int] | str | None = None,
                 devices: Sequence[jax.Device] | None = None,
                 names: Sequence[str] | None = None, mode: str = "auto",
                 compiler_options: dict | None = None):
        if len(steps) != len(states):
            raise ValueError(f"{len(steps)} block steps but {len(states)} block states")
        if mode not in MODES:
            raise ValueError(f"unknown pipeline mode {mode!r}; choose one of: {', '.join(MODES)}")
        devices = list(jax.devices() if devices is None else devices)
        if mode == "auto":
            mode = "mpmd" if data == 1 and jax.process_count() == 1 else "spmd"
        if compiler_options and mode != "mpmd":
            raise ValueError(f"compiler_options apply to mode='mpmd' only; got mode={mode!r}")
        if mode == "mpmd" and (data != 1 or jax.process_count() != 1):
            raise ValueError(f"mode='mpmd' runs on one process with data=1; got data={data}, "
                             f"{jax.process_count()} processes: use mode='spmd'")
        self.names = tuple(names or (f"block{i + 1}" for i in range(len(steps))))
        batch = int(jax.tree.leaves(example)[0].shape[0])
        if batch % data:
            raise ValueError(f"micro-batch size {batch} is not divisible by data={data}")
        self.micro_batch, self.n_stages, self.n_data = batch, stages, data
        # Shapes of every hand-over (s_i, y_i): boundary j feeds block j.
        shapes = [jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), example)]
        metric_keys = []
        for step, st in zip(steps, states):
            out = jax.eval_shape(step, st, *shapes[-1])
            shapes.append((out[1], out[2]))
            metric_keys.append(sorted(out[3]))
        self.plan: StagePlan | None = None
        if isinstance(blocks_per_stage, str):
            if blocks_per_stage not in BALANCE:
                raise ValueError(f"blocks_per_stage={blocks_per_stage!r}: give counts or one "
                                 f"of: {', '.join(BALANCE)}")
            if stages > len(self.names):
                group_blocks(self.names, stages)  # raises the error naming the blocks
            self.plan = plan(steps, states, shapes[:-1], stages, blocks_per_stage)
            blocks_per_stage = self.plan.blocks_per_stage
            logging.info("AL pipeline %s", self.plan.report(self.names))
        self.groups = group_blocks(self.names, stages, blocks_per_stage)
        self.metric_names = tuple(f"{self.names[b]}/{k}" for b, ks in enumerate(metric_keys)
                                  for k in ks)
        self._example = shapes[0]
        if mode == "mpmd":
            if stages > len(devices):
                make_mesh(stages, 1, devices)  # raises the error naming the devices
            if compiler_options is None and stages > 1 and all(
                    d.platform == "cpu" for d in devices[:stages]):
                # Forced host devices share the machine's cores: one thread per stage
                # (measured faster than stages sharing XLA's intra-op pool, which contend;
                # docs/notes/pipeline.md).
                compiler_options = {"xla_cpu_multi_thread_eigen": False}
            self.engine = MpmdEngine(steps, states, self.groups, metric_keys,
                                     self.metric_names, devices, compiler_options)
        else:
            self.engine = SpmdEngine(steps, states, self.groups, metric_keys,
                                     self.metric_names, shapes, data=data, devices=devices)
        self.mode, self.compiler_options = mode, compiler_options
        self._ticks, self._busy, self._fed = 0, np.zeros(stages, np.int64), 0
        self._slots = np.zeros(stages, bool)

    @property
    def mesh(self):
        """The SPMD engine's ``(stage[, data])`` mesh (None for MPMD)."""
        return getattr(self.engine, "mesh", None)

    def reset_pipeline(self, fill: float = 0.0) -> None:
        """Empties the in-flight hand-overs (SPMD: ``fill`` their values; NaN to test that
        bubbles never reach arithmetic; MPMD keeps no bubble buffers at all)."""
        if self.mode == "spmd":
            self.engine.reset_pipeline(fill)
        else:
            self.engine.reset_pipeline()
        self._slots = np.zeros(self.n_stages, bool)

    # -- training --------------------------------------------------------------------------
    def dispatch(self, xs: Any, ys: Any, valid: np.ndarray | None = None) -> PendingLog:
        """Like :meth:`train` but returns at once; the log is fetched by ``.result()``."""
        n = int(jax.tree.leaves(xs)[0].shape[0])
        valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
        ids = np.where(valid, self._fed + np.cumsum(valid) - 1, -1).astype(np.int32)
        pending = self.engine.dispatch(xs, ys, valid, ids, self._ticks)
        # The lock-step schedule both engines follow: slot k holds stage k's work this tick.
        for v in valid:
            self._slots = np.concatenate([[bool(v)], self._slots[:-1]])
            self._busy += self._slots
        self._ticks += len(valid)
        self._fed += int(np.sum(valid))
        return pending

    def _ticks_run(self, xs: Any, ys: Any, valid: np.ndarray) -> TickLog:
        return self.dispatch(xs, ys, valid).result()

    def train(self, xs: Any, ys: Any) -> TickLog:
        """Feeds micro-batches ``xs[m], ys[m]`` (leading axis n): n ticks, stage s trains
        on micro-batch t − s. Earlier calls' in-flight micro-batches continue first."""
        return self.dispatch(xs, ys).result()

    def _flush_inputs(self, fill: float) -> tuple:
        t = self.n_stages - 1
        mk = lambda s: np.full((t, *s.shape), _fill(fill, s.dtype), s.dtype)  # noqa: E731
        return jax.tree.map(mk, self._example)

    def flush(self, fill: float = 0.0) -> TickLog | None:
        """Drains the pipeline: N − 1 ticks with bubble inputs (``fill``; NaN in tests).

        Returns None (no ticks) when nothing is in flight.
        """
        if not self._slots[:-1].any():
            return None
        xs, ys = self._flush_inputs(fill)
        return self._ticks_run(xs, ys, np.zeros(self.n_stages - 1, bool))

    def wait(self) -> None:
        """Blocks until every dispatched tick has run (for timing)."""
        if self.mode == "mpmd":
            self.engine.wait()
        else:
            jax.block_until_ready(self.engine.buffers)

    # -- results ---------------------------------------------------------------------------
    def block_states(self) -> list[Any]:
        """Every block's current state as host numpy pytrees (gathers across processes)."""
        return self.engine.block_states()

    def stage_of_block(self, block: int) -> int:
        """The stage holding ``block``."""
        return next(k for k, g in enumerate(self.groups) if block in g)

    def schedule(self) -> Schedule:
        """Ticks, busy ticks per stage and bubble fraction since :meth:`reset_counters`."""
        return Schedule(micro_batches=self._fed, stages=self.n_stages, ticks=self._ticks,
                        busy=tuple(int(b) for b in self._busy))

    def reset_counters(self) -> None:
        """Starts a new accounting period (e.g. an epoch)."""
        self._ticks, self._busy, self._fed = 0, np.zeros(self.n_stages, np.int64), 0

