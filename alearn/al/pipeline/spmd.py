"""SPMD engine of the AL pipeline: one ``jax.shard_map`` program looping over ticks.

Stages differ in shape, so each stage's state (params + optimizer states) lives in per-dtype
flat buffers padded to the longest stage, stacked ``[N, L]`` one row per stage
(:mod:`.pack`). Per tick on stage k (``axis_index("stage")``): take the fed micro-batch
(k = 0) or the hand-over received from k − 1, zeroed when it is a bubble; run stage k's
blocks (``lax.switch`` on k, only k's branch executes), reading the state through slices of
the buffers and writing it back with in-place ``dynamic_update_slice`` per leaf, the bubble
mask ``where(valid, new, old)`` fused into that write (no per-tick concatenate or masked
copy of the whole state); ``ppermute`` (s, y, valid, id) to stage k + 1. What remains on
XLA:CPU: ``lax.switch`` is an HLO conditional, and copy insertion copies the state buffer
into and out of the taken branch (2 state-sized copies per tick for N > 1; none for N = 1).
One program, so the hand-over is a collective: this engine spans processes
(``jax.distributed``) and carries the ``data`` axis.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from alearn.al.pipeline import pack
from alearn.al.pipeline.log import PendingLog, TickLog
from alearn.al.pipeline.placement import DATA, STAGE, make_mesh

__all__ = ["SpmdEngine", "TickLog", "grad_mean"]


def _varying(x, axes):
    """Marks ``x`` as varying over mesh ``axes`` it is not yet varying over."""
    have = jax.typeof(x).manual_axis_type.varying
    missing = tuple(a for a in axes if a not in have)
    return jax.lax.pcast(x, missing, to="varying") if missing else x


def grad_mean(grads: Any, axis_name: str) -> Any:
    """Data-parallel mean of per-replica gradients inside the pipeline's ``shard_map``.

    Under shard_map's varying-axes typing, the gradient with respect to a parameter that is
    replicated over ``axis_name`` is *already summed* over it (the transpose of the implicit
    broadcast is a psum), so it is divided by the axis size; a gradient that still varies
    over the axis is averaged with ``pmean``.
    """
    size = jax.lax.axis_size(axis_name)

    def one(g):
        if axis_name in jax.typeof(g).manual_axis_type.varying:
            return jax.lax.pmean(g, axis_name)
        return g / size
    return jax.tree.map(one, grads)


def _fill(value: float, dtype: Any) -> Any:
    """``value`` for float buffers; 0 for integer/bool ones (NaN has no integer form)."""
    return value if jnp.issubdtype(jnp.dtype(dtype), jnp.floating) else 0


class SpmdEngine:
    """Packed per-stage buffers on a ``(stage[, data])`` mesh; see the module docstring."""

    kind = "spmd"

    def __init__(self, steps, states, groups, metric_keys, metric_names, shapes, *,
                 data: int, devices):
        self.groups, self.metric_names = groups, metric_names
        self.n_stages, self.n_data = len(groups), data
        self.mesh = make_mesh(self.n_stages, data, devices)
        self.micro_batch = int(jax.tree.leaves(shapes[0])[0].shape[0])
        self.boundaries = [pack.TreePacker(s, lead=1) for s in shapes]
        self.act_lengths = pack.max_lengths(self.boundaries)
        stage_states = [tuple(states[b] for b in g) for g in groups]
        self.stage_packers = [pack.TreePacker(s) for s in stage_states]
        self.state_lengths = pack.max_lengths(self.stage_packers)
        self._run = _build_run(self, list(steps), metric_keys)
        self._replicate = None
        self.buffers = self._put(pack.stack_buffers(
            [p.pack(s, self.state_lengths) for p, s in zip(self.stage_packers, stage_states)]),
            P(STAGE))
        self.reset_pipeline()

    # -- placement -------------------------------------------------------------------------
    @property
    def data_spec(self):
        """Partition of the micro-batch dimension (``data`` axis or replicated)."""
        return DATA if self.n_data > 1 else None

    def _put(self, tree: Any, spec: P) -> Any:
        """Global arrays from host values identical on every process (multi-host safe)."""
        sharding = NamedSharding(self.mesh, spec)

        def one(a):
            a = np.asarray(a)
            return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])
        return jax.tree.map(one, tree)

    def _get(self, tree: Any) -> Any:
        """Host numpy copies of (possibly multi-process) global arrays."""
        if self._replicate is None:
            self._replicate = jax.jit(lambda t: t,
                                      out_shardings=NamedSharding(self.mesh, P()))
        rep = self._replicate(tree)
        return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), rep)

    def reset_pipeline(self, fill: float = 0.0) -> None:
        """Empties the in-flight hand-overs (``fill`` their values; NaN to test masking)."""
        n, b = self.n_stages, self.micro_batch
        inbox = {k: np.full((n, b, d), _fill(fill, k), k) for k, d in self.act_lengths.items()}
        self._inbox = self._put(inbox, P(STAGE, self.data_spec))
        self._inbox_valid = self._put(np.zeros(n, bool), P(STAGE))
        self._inbox_id = self._put(np.full(n, -1, np.int32), P(STAGE))

    # -- ticks -----------------------------------------------------------------------------
    def _capacity(self, ticks: int) -> int:
        """Tick capacity of the compiled loop: a power of two >= 8 (few recompilations)."""
        return max(8, self.n_stages - 1, 1 << max(0, int(ticks) - 1).bit_length())

    def dispatch(self, xs: Any, ys: Any, valid: np.ndarray, ids: np.ndarray,
                 start: int) -> PendingLog:
        """Runs ``len(valid)`` ticks as one asynchronous program call."""
        t = len(valid)
        cap = self._capacity(t)
        pad = lambda a, v: np.concatenate(  # noqa: E731
            [np.asarray(a), np.full((cap - t, *np.shape(a)[1:]), v, np.asarray(a).dtype)])
        xs = self._put(jax.tree.map(lambda a: pad(a, 0), xs), P(None, self.data_spec))
        ys = self._put(jax.tree.map(lambda a: pad(a, 0), ys), P(None, self.data_spec))
        fv, fid = self._put(pad(valid, False), P()), self._put(pad(ids, -1), P())
        carry = (self.buffers, self._inbox, self._inbox_valid, self._inbox_id)
        carry, logs = self._run(carry, xs, ys, fv, fid, self._put(np.int32(t), P()))
        self.buffers, self._inbox, self._inbox_valid, self._inbox_id = carry

        def fetch() -> TickLog:
            met, val, mic = self._get(logs)
            return TickLog(met[:, :t], val[:, :t], mic[:, :t], names=self.metric_names,
                           start=start)
        return PendingLog(fetch)

    def block_states(self) -> list[Any]:
        """Every block's current state as host numpy pytrees (gathers across processes)."""
        host = self._get(self.buffers)
        out = []
        for k, p in enumerate(self.stage_packers):
            out.extend(p.unpack({n: a[k] for n, a in host.items()}))
        return out

    def placement(self) -> list[jax.Device]:
        """The first device of each stage."""
        return [row if self.n_data == 1 else row[0] for row in self.mesh.devices]


def _build_run(eng: SpmdEngine, steps: list, metric_keys: list[list[str]]):
    """The jitted ``run(carry, xs, ys, feed_valid, feed_id, n_ticks) -> (carry, logs)``.

    Inputs have a leading capacity axis; only the first ``n_ticks`` ticks run.
    """
    n_stages, dp = eng.n_stages, eng.n_data > 1
    axes = (STAGE, DATA) if dp else (STAGE,)
    kw = {"axis_name": DATA} if dp else {}
    n_metrics = max(1, len(eng.metric_names))

    def branch(k):
        blocks = eng.groups[k]

        def run_stage(bufs, act, keep):
            states = eng.stage_packers[k].unpack(bufs)
            s, y = eng.boundaries[blocks[0]].unpack(act)
            met = jnp.full((n_metrics,), jnp.nan, jnp.float32)
            new = []
            for b, st in zip(blocks, states):
                st, s, y, m = steps[b](st, s, y, **kw)
                new.append(st)
                for key in metric_keys[b]:
                    v = jnp.asarray(m[key], jnp.float32)
                    v = jax.lax.pmean(v, DATA) if dp else v
                    met = met.at[_slot(eng.metric_names, metric_keys, b, key)].set(v)
            out_bufs = eng.stage_packers[k].pack_into(bufs, tuple(new), keep, states)
            out_act = eng.boundaries[blocks[-1] + 1].pack((s, y), eng.act_lengths)
            out_bufs = {n: _varying(a, (STAGE,)) for n, a in out_bufs.items()}
            return out_bufs, {n: _varying(a, axes) for n, a in out_act.items()}, \
                _varying(met, (STAGE,))
        return run_stage

    branches = [branch(k) for k in range(n_stages)]
    perm = [(k, k + 1) for k in range(n_stages - 1)]

    def body(bufs, inbox, inbox_v, inbox_id, xs, ys, feed_v, feed_id, n_ticks):
        k = jax.lax.axis_index(STAGE)
        first = k == 0

        def tick(t, carry):
            (bufs, inbox, v_in, id_in), (met_log, v_log, id_log) = carry
            x, y = jax.tree.map(lambda a: a[t], (xs, ys))
            fed = eng.boundaries[0].pack((x, y), eng.act_lengths)
            v = jnp.where(first, feed_v[t], v_in)
            mid = jnp.where(first, feed_id[t], id_in)
            # Bubble inputs (NaN-filled in tests) are replaced by zeros before any compute,
            # and the state update is kept only for a real micro-batch (fused select).
            act = {n: jnp.where(v, jnp.where(first, fed[n], inbox[n]), 0).astype(inbox[n].dtype)
                   for n in inbox}
            if n_stages == 1:
                bufs, out_act, met = branches[0](bufs, act, v)
            else:
                bufs, out_act, met = jax.lax.switch(k, branches, bufs, act, v)
            if n_stages > 1:
                out_act, v_next, id_next = jax.lax.ppermute((out_act, v, mid), STAGE, perm)
            else:
                v_next, id_next = v, mid
            logs = (met_log.at[t].set(met), v_log.at[t].set(v), id_log.at[t].set(mid))
            return (bufs, out_act, v_next, id_next), logs

        cap = feed_v.shape[0]
        logs = (jnp.full((cap, n_metrics), jnp.nan, jnp.float32), jnp.zeros((cap,), bool),
                jnp.full((cap,), -1, jnp.int32))
        carry = ({n: a[0] for n, a in bufs.items()}, {n: a[0] for n, a in inbox.items()},
                 _varying(inbox_v[0], (STAGE,)), _varying(inbox_id[0], (STAGE,)))
        # A dynamic trip count: one compiled program serves every call of up to `cap` ticks.
        carry, logs = jax.lax.fori_loop(
            0, n_ticks, tick, (carry, jax.tree.map(lambda a: _varying(a, (STAGE,)), logs)))
        expand = lambda t: jax.tree.map(lambda a: a[None], t)  # noqa: E731
        return expand(carry), expand(logs)

    dspec = DATA if dp else None
    carry_specs = (P(STAGE), P(STAGE, dspec), P(STAGE), P(STAGE))
    mapped = jax.shard_map(
        body, mesh=eng.mesh,
        in_specs=(*carry_specs, P(None, dspec), P(None, dspec), P(), P(), P()),
        out_specs=(carry_specs, (P(STAGE), P(STAGE), P(STAGE))))

    def run(carry: tuple, xs: Any, ys: Any, feed_v, feed_id, n_ticks):
        return mapped(*carry, xs, ys, feed_v, feed_id, n_ticks)

    return jax.jit(run, donate_argnums=0)


def _slot(metric_names: tuple, metric_keys, block: int, key: str) -> int:
    """Index of ``block``'s metric ``key`` (metric_names enumerate (block, key) in order)."""
    return sum(len(ks) for ks in metric_keys[:block]) + list(metric_keys[block]).index(key)
