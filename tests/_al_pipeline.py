"""The AL pipeline tests' common run: the trainer's PipelinedStep and the sequential
whole-network AL step on the same batches from the same states."""

from __future__ import annotations

import jax
import ml_collections

import alearn.al as al
from alearn.al.pipeline.al import PipelinedStep


def pipelined_and_sequential(net, states, cfg: dict, xs, labels):
    """(step, pipelined states, its per-call metrics, sequential states, sequential metrics)
    after one call per (x, label) pair: ``PipelinedStep(net, states, cfg)`` then ``finish``,
    against jitted ``al.train_step`` from ``states``."""
    step = PipelinedStep(net, states, ml_collections.ConfigDict(cfg))
    got_metrics = [step(None, x, lab)[1] for x, lab in zip(xs, labels)]
    got = step.finish()
    want, seq, want_metrics = states, jax.jit(lambda st, x, lab: al.train_step(net, st, x, lab)), []
    for x, lab in zip(xs, labels):
        want, m = seq(want, x, lab)
        want_metrics.append(jax.device_get(m))
    return step, got, got_metrics, want, want_metrics
