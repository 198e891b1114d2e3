"""Associated Learning on the pipeline: AL blocks as stages, and the trainer's pipelined step.

Without a data axis a stage runs :func:`alearn.al.block_step` unchanged. With one
(``data=D``: each micro-batch split over D devices), the step is the same update with the
gradients averaged over the data replicas (:func:`grad_mean`), and BatchNorm is
*synchronised*: in training mode every replica normalises with the statistics of the whole
micro-batch (a ``pmean`` of the per-shard mean and mean square over ``data``, Flax's
``BatchNorm(axis_name=...)``), so the running averages and the gradients are those of
sequential AL on the full micro-batch (tests/test_pipeline.py, al_resnet20). Before this,
each replica normalised with its own shard's statistics (unsynchronised data-parallel BN):
al_resnet20 at 2 stages x 2 data devices trained differently from sequential AL (max |Δ|
0.13 after 2 steps). Blocks whose f or b is not an :class:`alearn.al.stack.Stack` but
carry ``batch_stats`` cannot be synchronised here and are refused with ``data > 1``
(:func:`sync_batch_norm`).

``--config.pipeline_stages=N`` replaces the AL trainer's step by the device pipeline:
:class:`PipelinedStep` has the whole-network step's signature ``(states, x, labels) ->
(states, metrics)`` so ``alearn.al.train`` keeps its loop: each call feeds one micro-batch
(= one training batch) and runs one tick; the in-flight activations persist across calls;
:meth:`PipelinedStep.finish` drains the pipeline once per epoch and returns the trained
block states (for evaluation and checkpoints). The parameters equal the sequential AL
trainer's (tests/test_pipeline.py).

Per-call metrics: at tick t block i reports micro-batch t − i + 1, so a block that is idle
at a tick (pipeline fill) repeats its last value (0 before its first), keeping the
epoch means the sequential trainer reports up to the fill ticks of the first epoch. The
metrics a call returns are those of the *previous* call's tick (one call late): the host
then waits only for work dispatched earlier, never for the micro-batch it has just fed, so
consecutive calls overlap on the devices (the trainer reads every call's metrics).
Config fields: ``pipeline_stages`` (N; 0 = off), ``pipeline_data`` (devices per stage,
default 1), ``pipeline_blocks_per_stage`` (optional tuple, or "flops"/"time" for a balanced
plan), ``pipeline_mode`` (optional: "auto", "mpmd", "spmd"). On CPU run with
``XLA_FLAGS=--xla_force_host_platform_device_count=N*data``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from alearn.al.block import BlockDef, BlockState, block_losses, block_step
from alearn.al.network import ALNetwork
from alearn.al.pipeline.core import Pipeline
from alearn.al.pipeline.placement import DATA
from alearn.al.pipeline.spmd import grad_mean
from alearn.al.schedule import format_report
from alearn.al.stack import Stack


def _mean_varying(tree, axis_name: str):
    """``pmean`` over ``axis_name`` of the leaves that vary over it."""
    def one(a):
        if axis_name in jax.typeof(a).manual_axis_type.varying:
            return jax.lax.pmean(a, axis_name)
        return a
    return jax.tree.map(one, tree)


def _has_batch_stats(collections: Any) -> bool:
    """Whether a module's non-param collections (``model_state[part]``) hold batch_stats."""
    return isinstance(collections, dict) and bool(
        jax.tree.leaves(collections.get("batch_stats", {})))


def sync_batch_norm(bd: BlockDef, model_state: dict, axis_name: str) -> BlockDef:
    """``bd`` with its BatchNorm layers synchronised over ``axis_name`` (statistics of the
    whole batch split over that axis, as sequential AL computes them on one device).

    ``f`` and ``b`` that are :class:`~alearn.al.stack.Stack` modules get
    ``bn_axis_name=axis_name``; modules without BatchNorm state are kept as they are.

    Raises:
      ValueError: ``f`` or ``b`` holds ``batch_stats`` but is not a ``Stack``: its BatchNorm
        would normalise with per-shard statistics, silently unlike sequential AL.
    """
    parts = {}
    for part in ("f", "b"):
        module = getattr(bd, part)
        if isinstance(module, Stack):
            parts[part] = module.clone(bn_axis_name=axis_name)
        elif _has_batch_stats(model_state.get(part, {})):
            raise ValueError(
                f"{bd.name}: its {part} ({type(module).__name__}) has BatchNorm batch_stats, "
                f"which a data axis ({axis_name!r}) cannot synchronise (only alearn.al.stack."
                f"Stack's BatchNorm is); each device would normalise with its own shard's "
                f"statistics, unlike sequential AL on the full micro-batch. Use "
                f"pipeline_data=1 (data=1), or give that BatchNorm axis_name={axis_name!r}")
    return dataclasses.replace(bd, **parts) if parts else bd


def al_step(bd: BlockDef, st: BlockState, s_in, y_in, axis_name: str | None = None):
    """:func:`alearn.al.block_step`, data-parallel over ``axis_name`` when given (gradients
    averaged over it, BatchNorm synchronised over it: :func:`sync_batch_norm`)."""
    if axis_name is None:
        return block_step(bd, st, s_in, y_in)
    bd = sync_batch_norm(bd, st.model_state, axis_name)
    grads, (metrics, s, y, model_state) = jax.grad(
        lambda p: block_losses(bd, p, st.model_state, s_in, y_in), has_aux=True)(st.params)
    grads = grad_mean(grads, axis_name)
    model_state = _mean_varying(model_state, axis_name)
    fwd_p = {"f": st.params["f"], "b": st.params["b"]}
    ae_p = {"g": st.params["g"], "h": st.params["h"]}
    upd_f, opt_f = bd.tx_forward.update({"f": grads["f"], "b": grads["b"]}, st.opt_forward,
                                        fwd_p)
    upd_a, opt_a = bd.tx_ae.update({"g": grads["g"], "h": grads["h"]}, st.opt_ae, ae_p)
    fwd_p, ae_p = optax.apply_updates(fwd_p, upd_f), optax.apply_updates(ae_p, upd_a)
    params = {"f": fwd_p["f"], "g": ae_p["g"], "h": ae_p["h"], "b": fwd_p["b"]}
    return BlockState(params, model_state, opt_f, opt_a), s, y, metrics


def for_network(net: ALNetwork, states: Sequence[BlockState], micro_batch: int, *,
                stages: int, data: int = 1,
                blocks_per_stage: Sequence[int] | str | None = None,
                devices: Sequence[jax.Device] | None = None, mode: str = "auto",
                compiler_options: dict | None = None):
    """A :class:`alearn.al.pipeline.Pipeline` of ``net``'s blocks; feed it with :func:`feed`.

    ``blocks_per_stage``: counts, ``"flops"``/``"time"`` (balanced plan) or None (equal).
    """
    if data > 1:  # refuse unsynchronisable BatchNorm now, not at the first tick
        for bd, st in zip(net.blocks, states):
            sync_batch_norm(bd, st.model_state, DATA)
    steps = [functools.partial(al_step, bd) for bd in net.blocks]
    example = (jax.ShapeDtypeStruct((micro_batch, *net.input_shape), jnp.float32),
               jax.ShapeDtypeStruct((micro_batch, net.num_classes), jnp.float32))
    return Pipeline(steps, states, example, stages=stages, data=data,
                    blocks_per_stage=blocks_per_stage, devices=devices,
                    names=[bd.name for bd in net.blocks], mode=mode,
                    compiler_options=compiler_options)


def one_hot(net: ALNetwork, labels) -> np.ndarray:
    """``y_0`` on the host: equal to :func:`alearn.al.targets` (0/1 float32), without a
    device computation that would wait behind the steps already dispatched."""
    labels = np.asarray(labels)
    return (labels[..., None] == np.arange(net.num_classes)).astype(np.float32)


def feed(pl: Pipeline, net: ALNetwork, xs, labels, wait: bool = True):
    """Trains on micro-batches ``xs [n, b, ...]`` with integer ``labels [n, b]`` (y_0 =
    one-hot, :func:`alearn.al.targets`). ``wait=False`` returns the
    :class:`~alearn.al.pipeline.log.PendingLog` without waiting for the ticks."""
    pending = pl.dispatch(np.asarray(xs, np.float32), one_hot(net, labels))
    return pending.result() if wait else pending


def _bps(value: Any):
    """``pipeline_blocks_per_stage``: None, a tuple of counts, or "flops"/"time"."""
    if not value:
        return None
    return value if isinstance(value, str) else tuple(value)


class PipelinedStep:
    """The pipeline behind the AL trainer's ``step_fn(states, x, labels)`` interface."""

    def __init__(self, net: ALNetwork, states: Any, config: Any):
        stages = int(config.get("pipeline_stages", 0) or 0)
        bps = config.get("pipeline_blocks_per_stage", None)
        self.net, self.batch = net, int(config.batch_size)
        self.pipeline = for_network(net, states, self.batch, stages=stages,
                                    data=int(config.get("pipeline_data", 1) or 1),
                                    blocks_per_stage=_bps(bps),
                                    mode=str(config.get("pipeline_mode", "auto")))
        self._last: dict[str, float] = {}
        self._pending = None

    def __call__(self, states: Any, x: Any, labels: Any) -> tuple[Any, dict]:
        x, labels = np.asarray(x), np.asarray(labels)
        if x.shape[0] != self.batch:
            raise ValueError(f"the pipeline trains fixed micro-batches of {self.batch}; got a "
                             f"batch of {x.shape[0]} (drop the remainder batch)")
        pending = feed(self.pipeline, self.net, x[None], labels[None], wait=False)
        if self._pending is not None:
            self._last.update(self._pending.result().means())
        self._pending = pending
        return states, self._metrics()

    def _metrics(self) -> dict:
        out = {}
        for i in range(len(self.net.blocks)):
            name = self.net.blocks[i].name
            for key in ("assoc_loss", "ae_loss"):
                out[f"{key}_{i + 1}"] = self._last.get(f"{name}/{key}", 0.0)
        for key in ("assoc_loss", "ae_loss"):
            out[key] = sum(out[f"{key}_{i + 1}"] for i in range(len(self.net.blocks)))
        return out

    def finish(self) -> tuple:
        """Drains the pipeline (end of epoch); returns every block's trained state."""
        if self._pending is not None:
            self._last.update(self._pending.result().means())
            self._pending = None
        log = self.pipeline.flush()
        if log is not None:
            self._last.update(log.means())
        logging.info("AL pipeline epoch: %s", format_report(self.pipeline.schedule()))
        self.pipeline.reset_counters()
        return tuple(self.pipeline.block_states())
