"""``--config.pipeline_stages=N``: the AL trainer's step replaced by the device pipeline.

:class:`PipelinedStep` has the whole-network step's signature ``(states, x, labels) ->
(states, metrics)`` so ``alearn.al.train`` keeps its loop: each call feeds one micro-batch
(= one training batch) and runs one tick; the in-flight activations persist across calls;
:meth:`PipelinedStep.finish` drains the pipeline once per epoch and returns the trained
block states (for evaluation and checkpoints). The parameters equal the sequential AL
trainer's (tests/test_pipeline.py).

Per-call metrics: at tick t block i reports micro-batch t − i + 1, so a block that is idle
at a tick (pipeline fill) repeats its last value (0 before its first), keeping the
epoch means the sequential trainer reports up to the fill ticks of the first epoch.
Config fields: ``pipeline_stages`` (N; 0 = off), ``pipeline_data`` (devices per stage,
default 1), ``pipeline_blocks_per_stage`` (optional tuple). On CPU run with
``XLA_FLAGS=--xla_force_host_platform_device_count=N*data``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from absl import logging

from alearn.al._pipeline_al import feed, for_network
from alearn.al.network import ALNetwork
from alearn.al.schedule import format_report


class PipelinedStep:
    """The pipeline behind the AL trainer's ``step_fn(states, x, labels)`` interface."""

    def __init__(self, net: ALNetwork, states: Any, config: Any):
        stages = int(config.get("pipeline_stages", 0) or 0)
        bps = config.get("pipeline_blocks_per_stage", None)
        self.net, self.batch = net, int(config.batch_size)
        self.pipeline = for_network(net, states, self.batch, stages=stages,
                                    data=int(config.get("pipeline_data", 1) or 1),
                                    blocks_per_stage=tuple(bps) if bps else None)
        self._last: dict[str, float] = {}

    def __call__(self, states: Any, x: Any, labels: Any) -> tuple[Any, dict]:
        x, labels = np.asarray(x), np.asarray(labels)
        if x.shape[0] != self.batch:
            raise ValueError(f"the pipeline trains fixed micro-batches of {self.batch}; got a "
                             f"batch of {x.shape[0]} (drop the remainder batch)")
        log = feed(self.pipeline, self.net, x[None], labels[None])
        self._last.update(log.means())
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
        log = self.pipeline.flush()
        if log is not None:
            self._last.update(log.means())
        logging.info("AL pipeline epoch: %s", format_report(self.pipeline.schedule()))
        self.pipeline.reset_counters()
        return tuple(self.pipeline.block_states())
