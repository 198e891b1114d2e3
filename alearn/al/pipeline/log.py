"""What the pipeline ran: per-tick logs, fetched from the devices only when asked.

A call of :meth:`alearn.al.pipeline.Pipeline.train` dispatches its ticks asynchronously and
returns once :meth:`PendingLog.result` has copied the metrics to the host; the trainer's
:class:`~alearn.al.pipeline.al.PipelinedStep` resolves each call's log one call later,
so the host never waits for the micro-batch it has just fed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


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


class PendingLog:
    """A :class:`TickLog` whose metrics may still be computing; :meth:`result` waits."""

    def __init__(self, fetch: Callable[[], TickLog]):
        self._fetch, self._log = fetch, None

    def result(self) -> TickLog:
        """The host log (blocks until the call's ticks have run; cached)."""
        if self._log is None:
            self._log, self._fetch = self._fetch(), None
        return self._log
