"""The Associated Learning device pipeline: one block group per device along a mesh axis.

AL journal abstract (ALGORITHMS.md Part B, "Pipelining"): block i's update needs only block
i−1's forward output, so the work item (block s, micro-batch m) depends only on (s−1, m) and
(s, m−1). At tick t, stage s trains on micro-batch t − s and hands (s_i, y_i) to stage s+1
with ``jax.lax.ppermute``: the parameters equal sequential per-micro-batch AL exactly
(no staleness), and n micro-batches take n + N − 1 ticks instead of n·N block steps.

Layout: one SPMD program (``jax.shard_map`` over the ``stage`` axis, optional ``data`` axis
inside each stage). Stages differ in shape, so each stage's state (params + optimizer
states) is packed into per-dtype flat buffers padded to the longest stage and stacked
``[N, L]`` sharded one row per stage (``_pipeline_pack``); each device runs its own block
code through ``jax.lax.switch`` on its stage index (only that branch executes). One
program, rather than one executable per device, is what lets the same trainer span
processes: the hand-over is a collective, not a host-driven copy.

Bubble ticks (no micro-batch yet / any more) change nothing: their inputs are zeroed
before the step and the state update is masked with ``jnp.where``. In-flight activations
persist across :meth:`Pipeline.train` calls; :meth:`Pipeline.flush` drains them (once per
epoch).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from alearn.al import _pipeline_pack as pack
from alearn.al._pipeline_mesh import DATA, STAGE, group_blocks, make_mesh  # noqa: F401
from alearn.al._pipeline_run import TickLog, build_run, grad_mean
from alearn.al.schedule import Schedule

StepFn = Callable[..., tuple[Any, Any, Any, dict]]


def _fill(value: float, dtype: Any) -> Any:
    """``value`` for float buffers; 0 for integer/bool ones (NaN has no integer form)."""
    return value if jnp.issubdtype(jnp.dtype(dtype), jnp.floating) else 0


class Pipeline:
    """Pipelined trainer of a chain of blocks ``step(state, s, y) -> (state, s, y, metrics)``.

    Args:
      steps: one pure step per block; with a data axis (``data > 1``) each is called as
        ``step(state, s, y, axis_name="data")`` and must average its gradients over it.
      states: initial state of every block (any pytree).
      example: one micro-batch ``(x, y_0)`` (arrays or ShapeDtypeStructs, batch first).
      stages: number of pipeline stages N (devices along ``stage``).
      data: devices per stage along ``data`` (data parallelism inside a stage).
      blocks_per_stage: consecutive blocks per stage (default: equal split).
      devices: devices to use (default ``jax.devices()``, all processes).
      names: block names for errors and metrics (default ``block1`` ...).
    """

    def __init__(self, steps: Sequence[StepFn], states: Sequence[Any], example: tuple,
                 *, stages: int, data: int = 1, blocks_per_stage: Sequence[int] | None = None,
                 devices: Sequence[jax.Device] | None = None,
                 names: Sequence[str] | None = None):
        if len(steps) != len(states):
            raise ValueError(f"{len(steps)} block steps but {len(states)} block states")
        self.names = tuple(names or (f"block{i + 1}" for i in range(len(steps))))
        self.groups = group_blocks(self.names, stages, blocks_per_stage)
        self.mesh = make_mesh(stages, data, devices)
        self.n_stages, self.n_data = stages, data
        batch = int(jax.tree.leaves(example)[0].shape[0])
        if batch % data:
            raise ValueError(f"micro-batch size {batch} is not divisible by data={data}")
        self.micro_batch = batch
        # Shapes of every hand-over (s_i, y_i): boundary j feeds block j.
        shapes = [jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), example)]
        for step, st in zip(steps, states):
            out = jax.eval_shape(step, st, *shapes[-1])
            shapes.append((out[1], out[2]))
        self.boundaries = [pack.TreePacker(s, lead=1) for s in shapes]
        self.act_lengths = pack.max_lengths(self.boundaries)
        stage_states = [tuple(states[b] for b in g) for g in self.groups]
        self.stage_packers = [pack.TreePacker(s) for s in stage_states]
        self.state_lengths = pack.max_lengths(self.stage_packers)
        metric_keys = [sorted(jax.eval_shape(step, st, *shapes[b])[3])
                       for b, (step, st) in enumerate(zip(steps, states))]
        self.metric_names = tuple(f"{self.names[b]}/{k}" for b, ks in enumerate(metric_keys)
                                  for k in ks)
        self._run = build_run(self, list(steps), metric_keys)
        self.buffers = self._put(pack.stack_buffers(
            [p.pack(s, self.state_lengths) for p, s in zip(self.stage_packers, stage_states)]),
            P(STAGE))
        self.reset_pipeline()
        self._ticks, self._busy, self._fed = 0, np.zeros(stages, np.int64), 0

    # -- placement -------------------------------------------------------------------------
    def _sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    @property
    def data_spec(self):
        """Partition of the micro-batch dimension (``data`` axis or replicated)."""
        return DATA if self.n_data > 1 else None

    def _put(self, tree: Any, spec: P) -> Any:
        """Global arrays from host values identical on every process (multi-host safe)."""
        def one(a):
            a = np.asarray(a)
            return jax.make_array_from_callback(a.shape, self._sharding(spec), lambda i: a[i])
        return jax.tree.map(one, tree)

    def _get(self, tree: Any) -> Any:
        """Host numpy copies of (possibly multi-process) global arrays."""
        if self._replicate is None:
            self._replicate = jax.jit(lambda t: t, out_shardings=self._sharding(P()))
        rep = self._replicate(tree)
        return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), rep)

    def reset_pipeline(self, fill: float = 0.0) -> None:
        """Empties the in-flight hand-overs (``fill`` their values; NaN to test masking)."""
        n, b = self.n_stages, self.micro_batch
        inbox = {k: np.full((n, b, d), _fill(fill, k), k) for k, d in self.act_lengths.items()}
        self._inbox = self._put(inbox, P(STAGE, self.data_spec))
        self._inbox_valid = self._put(np.zeros(n, bool), P(STAGE))
        self._inbox_id = self._put(np.full(n, -1, np.int32), P(STAGE))

    # -- training --------------------------------------------------------------------------
    def _capacity(self, ticks: int) -> int:
        """Tick capacity of the compiled loop: a power of two >= 8 (few recompilations)."""
        return max(8, self.n_stages - 1, 1 << max(0, int(ticks) - 1).bit_length())

    def _ticks_run(self, xs: Any, ys: Any, valid: np.ndarray) -> TickLog:
        t = len(valid)
        cap = self._capacity(t)
        ids = np.where(valid, self._fed + np.cumsum(valid) - 1, -1).astype(np.int32)
        pad = lambda a, v: np.concatenate(  # noqa: E731
            [np.asarray(a), np.full((cap - t, *np.shape(a)[1:]), v, np.asarray(a).dtype)])
        xs = self._put(jax.tree.map(lambda a: pad(a, 0), xs), P(None, self.data_spec))
        ys = self._put(jax.tree.map(lambda a: pad(a, 0), ys), P(None, self.data_spec))
        fv, fid = self._put(pad(valid, False), P()), self._put(pad(ids, -1), P())
        carry = (self.buffers, self._inbox, self._inbox_valid, self._inbox_id)
        carry, logs = self._run(carry, xs, ys, fv, fid, self._put(np.int32(t), P()))
        self.buffers, self._inbox, self._inbox_valid, self._inbox_id = carry
        met, val, mic = self._get(logs)
        log = TickLog(met[:, :t], val[:, :t], mic[:, :t], names=self.metric_names,
                      start=self._ticks)
        self._ticks += t
        self._fed += int(np.sum(valid))
        self._busy += log.valid.sum(axis=1)
        self._pending = bool(np.any(valid)) or (self._pending and t < self.n_stages - 1)
        return log

    _pending = False
    _replicate = None

    def train(self, xs: Any, ys: Any) -> TickLog:
        """Feeds micro-batches ``xs[m], ys[m]`` (leading axis n): n ticks, stage s trains
        on micro-batch t − s. Earlier calls' in-flight micro-batches continue first."""
        n = int(jax.tree.leaves(xs)[0].shape[0])
        return self._ticks_run(xs, ys, np.ones(n, bool))

    def flush(self, fill: float = 0.0) -> TickLog | None:
        """Drains the pipeline: N − 1 ticks with bubble inputs (``fill``; NaN in tests).

        Returns None (no ticks) when nothing is in flight.
        """
        if not self._pending or self.n_stages == 1:
            return None
        t = self.n_stages - 1
        mk = lambda s: np.full((t, *s.shape[1:]), _fill(fill, s.dtype), s.dtype)  # noqa: E731
        xs = jax.tree.map(mk, self.boundaries_example[0])
        ys = jax.tree.map(mk, self.boundaries_example[1])
        return self._ticks_run(xs, ys, np.zeros(t, bool))

    @property
    def boundaries_example(self) -> tuple:
        """ShapeDtypeStructs of one fed micro-batch ``(x, y_0)`` with a leading tick axis."""
        meta = self.boundaries[0]
        leaves = [jax.ShapeDtypeStruct((1, self.micro_batch, *shape), jnp.dtype(dt))
                  for dt, _, shape in meta.meta]
        return meta.treedef.unflatten(leaves)

    # -- results ---------------------------------------------------------------------------
    def block_states(self) -> list[Any]:
        """Every block's current state as host numpy pytrees (gathers across processes)."""
        host = self._get(self.buffers)
        out = []
        for k, p in enumerate(self.stage_packers):
            out.extend(p.unpack({n: a[k] for n, a in host.items()}))
        return out

    def stage_of_block(self, block: int) -> int:
        """The stage (row of the ``stage`` mesh axis) holding ``block``."""
        return next(k for k, g in enumerate(self.groups) if block in g)

    def schedule(self) -> Schedule:
        """Ticks, busy ticks per stage and bubble fraction since :meth:`reset_counters`."""
        return Schedule(micro_batches=self._fed, stages=self.n_stages, ticks=self._ticks,
                        busy=tuple(int(b) for b in self._busy))

    def reset_counters(self) -> None:
        """Starts a new accounting period (e.g. an epoch)."""
        self._ticks, self._busy, self._fed = 0, np.zeros(self.n_stages, np.int64), 0


# AL blocks as stages (defined after Pipeline: that module builds on it).
from alearn.al._pipeline_al import al_step, feed, for_network  # noqa: E402

__all__ = ["Pipeline", "Schedule", "TickLog", "al_step", "feed", "for_network", "grad_mean",
           "group_blocks", "make_mesh"]
