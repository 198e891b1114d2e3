"""``--config.pipeline_stages=N``: the AL trainer's step replaced by the device pipeline.

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

from typing import Any

import numpy as np
from absl import logging

from alearn.al.pipeline.al import feed, for_network
from alearn.al.network import ALNetwork
from alearn.al.schedule import format_report


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
