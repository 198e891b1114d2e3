"""The pipeline's tick loop: one ``jax.shard_map`` program looping over ticks.

Per tick on stage k (``axis_index("stage")``): take the fed micro-batch (k = 0) or the
hand-over received from stage k − 1; zero it when it is a bubble; run stage k's blocks
(``jax.lax.switch`` over per-stage branches, only k's executes); keep the new state only
for a real micro-batch (``jnp.where``); ``ppermute`` (s, y, valid, id) to stage k + 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from alearn.al._pipeline_mesh import DATA, STAGE


@dataclasses.dataclass
class TickLog:
    """What each stage did at each tick of one call (host numpy, stage-major).

    Attributes:
      metrics: ``[N, T, K]`` block metrics (NaN where the stage has no such block).
      valid: ``[N, T]`` whether stage k trained on a real micro-batch at tick t.
      micro: ``[N, T]`` the micro-batch index stage k trained on (−1 for bubbles).
      names: the K metric names (``blockname/metric``).
      start: global index of this call's first tick.
    """

    metrics: np.ndarray
    valid: np.ndarray
    micro: np.ndarray
    names: tuple = ()
    start: int = 0

    def means(self) -> dict[str, float]:
        """Mean of each metric over the real micro-batches of this call."""
        out = {}
        for j, name in enumerate(self.names):
            vals = self.metrics[:, :, j][self.valid & ~np.isnan(self.metrics[:, :, j])]
            if vals.size:
                out[name] = float(vals.mean())
        return out


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


def build_run(pl, steps: list, metric_keys: list[list[str]]):
    """The jitted ``run(carry, xs, ys, feed_valid, feed_id, n_ticks) -> (carry, logs)``.

    Inputs have a leading capacity axis; only the first ``n_ticks`` ticks run.
    """
    n_stages, dp = pl.n_stages, pl.n_data > 1
    axes = (STAGE, DATA) if dp else (STAGE,)
    kw = {"axis_name": DATA} if dp else {}
    slots = {name: j for j, name in enumerate(pl.metric_names)}
    n_metrics = max(1, len(slots))

    def branch(k):
        blocks = pl.groups[k]

        def run_stage(bufs, act):
            states = pl.stage_packers[k].unpack(bufs)
            s, y = pl.boundaries[blocks[0]].unpack(act)
            met = jnp.full((n_metrics,), jnp.nan, jnp.float32)
            new = []
            for b, st in zip(blocks, states):
                st, s, y, m = steps[b](st, s, y, **kw)
                new.append(st)
                for key in metric_keys[b]:
                    v = jnp.asarray(m[key], jnp.float32)
                    v = jax.lax.pmean(v, DATA) if dp else v
                    met = met.at[slots[f"{pl.names[b]}/{key}"]].set(v)
            out_bufs = pl.stage_packers[k].pack(tuple(new), pl.state_lengths)
            out_act = pl.boundaries[blocks[-1] + 1].pack((s, y), pl.act_lengths)
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
            fed = pl.boundaries[0].pack((x, y), pl.act_lengths)
            v = jnp.where(first, feed_v[t], v_in)
            mid = jnp.where(first, feed_id[t], id_in)
            # Bubble inputs (NaN-filled in tests) are replaced by zeros before any compute.
            act = {n: jnp.where(v, jnp.where(first, fed[n], inbox[n]), 0).astype(inbox[n].dtype)
                   for n in inbox}
            if n_stages == 1:
                new_bufs, out_act, met = branches[0](bufs, act)
            else:
                new_bufs, out_act, met = jax.lax.switch(k, branches, bufs, act)
            bufs = {n: jnp.where(v, new_bufs[n], bufs[n]) for n in bufs}
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
        body, mesh=pl.mesh,
        in_specs=(*carry_specs, P(None, dspec), P(None, dspec), P(), P(), P()),
        out_specs=(carry_specs, (P(STAGE), P(STAGE), P(STAGE))))

    def run(carry: tuple, xs: Any, ys: Any, feed_v, feed_id, n_ticks):
        return mapped(*carry, xs, ys, feed_v, feed_id, n_ticks)

    return jax.jit(run, donate_argnums=0)
