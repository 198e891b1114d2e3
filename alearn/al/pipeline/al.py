"""Associated Learning blocks as pipeline stages (``alearn.al.block_step`` per block).

Without a data axis a stage runs :func:`alearn.al.block_step` unchanged. With one, the
step is the same update with the gradients averaged over the data replicas
(:func:`grad_mean`) and batch statistics averaged with ``pmean`` (each replica normalises
with its own shard's statistics, as usual for data-parallel BatchNorm).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alearn.al.block import BlockDef, BlockState, block_losses, block_step
from alearn.al.network import ALNetwork
from alearn.al.pipeline.core import Pipeline
from alearn.al.pipeline.spmd import grad_mean


def _mean_varying(tree, axis_name: str):
    """``pmean`` over ``axis_name`` of the leaves that vary over it."""
    def one(a):
        if axis_name in jax.typeof(a).manual_axis_type.varying:
            return jax.lax.pmean(a, axis_name)
        return a
    return jax.tree.map(one, tree)


def al_step(bd: BlockDef, st: BlockState, s_in, y_in, axis_name: str | None = None):
    """:func:`alearn.al.block_step`, data-parallel over ``axis_name`` when given."""
    if axis_name is None:
        return block_step(bd, st, s_in, y_in)
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
