"""The Associated Learning device pipeline: one block group per device.

AL journal abstract (ALGORITHMS.md Part B, "Pipelining"): block i's update needs only block
i−1's forward output, so the work item (block s, micro-batch m) depends only on (s−1, m) and
(s, m−1). At tick t, stage s trains on micro-batch t − s and hands (s_i, y_i) to stage s+1:
the parameters equal sequential per-micro-batch AL exactly (no staleness), and n
micro-batches take n + N − 1 ticks instead of n·N block steps.

Two engines compute the same thing (tests/test_pipeline.py checks both against sequential
AL):

- ``mode="mpmd"`` (:mod:`.mpmd`): one jitted stage step per device, states kept as the
  blocks' own pytrees and donated, dispatched asynchronously; hand-over by
  ``jax.device_put`` to the next device. Per tick a stage pays its block step plus the
  hand-over, nothing else; heterogeneous blocks cost nothing extra. One process only.
- ``mode="spmd"`` (:mod:`.spmd`): one ``jax.shard_map`` program over the ``stage`` mesh
  axis (optional ``data`` axis inside each stage), states packed into padded per-stage
  buffers updated in place, ``lax.switch`` on the stage index, ``ppermute`` hand-over.
  Needed across processes (the hand-over is a collective) and for ``data > 1``.

``mode="auto"`` picks MPMD for one process with ``data == 1`` and SPMD otherwise (measured
trade-off: docs/notes/pipeline.md). In-flight activations persist across
:meth:`Pipeline.train` calls; :meth:`Pipeline.flush` drains them (once per epoch).
With more blocks than stages, ``blocks_per_stage="flops"`` or ``"time"`` groups the blocks
so the heaviest stage is as light as possible (:attr:`Pipeline.plan`).

Modules (each imports only those above it): :mod:`.log` (``TickLog``, ``PendingLog``),
:mod:`.pack` (padded per-stage buffers), :mod:`.placement` (mesh, block grouping, stage
balancing, ``StagePlan``), :mod:`.mpmd` and :mod:`.spmd` (the engines), :mod:`.core`
(:class:`Pipeline`), :mod:`.al` (AL blocks as stages, the trainer's ``PipelinedStep``).
"""

from alearn.al.pipeline.core import MODES, Pipeline
from alearn.al.pipeline.log import PendingLog, TickLog
from alearn.al.pipeline.placement import (BALANCE, DATA, STAGE,  # noqa: F401
                                          StagePlan, balance_blocks, group_blocks, make_mesh)
from alearn.al.pipeline.spmd import grad_mean
from alearn.al.pipeline.al import al_step, feed, for_network
from alearn.al.schedule import Schedule

__all__ = ["MODES", "Pipeline", "PendingLog", "Schedule", "StagePlan", "TickLog", "al_step",
           "balance_blocks", "feed", "for_network", "grad_mean", "group_blocks", "make_mesh"]
