"""Where the blocks go: the device mesh, block grouping and stage balancing of the pipeline.

Errors name the devices and blocks. A pipeline tick lasts as long as its slowest stage, so
with more blocks than stages the blocks are grouped (consecutively) so that the heaviest
stage is as light as possible (:func:`balance_blocks`). Costs (:func:`block_costs`) are
XLA's ``cost_analysis`` flops of each block's jitted step (``"flops"``: deterministic, free
of machine load) or its measured wall time on one device (``"time"``: fastest of a few
runs); :func:`plan` turns them into a :class:`StagePlan`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from alearn.al import schedule

STAGE, DATA = "stage", "data"
BALANCE = ("flops", "time")


def _describe(devices: Sequence[jax.Device]) -> str:
    names = [f"{d.platform}:{d.id}" for d in devices]
    return ", ".join(names) if names else "(none)"


def make_mesh(stages: int, data: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(stage[, data])`` mesh over the first ``stages * data`` devices, in order.

    Devices are taken in ``jax.devices()`` order (process by process), so consecutive stages
    sit on the same process and the stage axis spans processes in a multi-host run. Axes are
    ``AxisType.Auto``. Without a data axis (``data == 1``) the mesh has only ``stage``.

    Raises:
      ValueError: fewer devices than ``stages * data``, naming the devices there are.
    """
    devices = list(jax.devices() if devices is None else devices)
    if stages < 1 or data < 1:
        raise ValueError(f"pipeline_stages and data must be >= 1; got stages={stages}, "
                         f"data={data}")
    need = stages * data
    if need > len(devices):
        raise ValueError(
            f"pipeline_stages={stages} x data={data} needs {need} devices, but only "
            f"{len(devices)} are available ({_describe(devices)}); use at most "
            f"{len(devices) // data} stages, or on CPU set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={need} before JAX is imported")
    grid = np.array(devices[:need], dtype=object)
    if data == 1:
        return Mesh(grid.reshape(stages), (STAGE,), axis_types=(AxisType.Auto,))
    return Mesh(grid.reshape(stages, data), (STAGE, DATA), axis_types=(AxisType.Auto,) * 2)


def group_blocks(block_names: Sequence[str], stages: int,
                 blocks_per_stage: Sequence[int] | None = None) -> tuple[tuple[int, ...], ...]:
    """Consecutive block indices of each stage.

    Default: ``len(blocks) / stages`` blocks per stage (must divide); ``blocks_per_stage``
    gives the counts explicitly (each >= 1, summing to the number of blocks).

    Raises:
      ValueError: naming the blocks and the stage count when they cannot be grouped.
    """
    n = len(block_names)
    listed = ", ".join(block_names)
    if stages > n:
        raise ValueError(f"pipeline_stages={stages} exceeds the {n} blocks ({listed}): every "
                         f"stage needs at least one block; use at most {n} stages")
    if blocks_per_stage is None:
        if n % stages:
            hint = [n // stages + (1 if i < n % stages else 0) for i in range(stages)]
            raise ValueError(
                f"pipeline_stages={stages} does not divide the {n} blocks ({listed}); choose a "
                f"divisor of {n} or pass blocks_per_stage explicitly, e.g. {tuple(hint)}")
        blocks_per_stage = [n // stages] * stages
    counts = [int(c) for c in blocks_per_stage]
    if len(counts) != stages or min(counts) < 1 or sum(counts) != n:
        raise ValueError(f"blocks_per_stage={tuple(counts)} must give {stages} stages of >= 1 "
                         f"block summing to the {n} blocks ({listed})")
    bounds = np.cumsum([0] + counts)
    return tuple(tuple(range(bounds[i], bounds[i + 1])) for i in range(stages))


def balance_blocks(costs: Sequence[float], stages: int) -> tuple[int, ...]:
    """Blocks per stage of the contiguous split of ``costs`` whose heaviest stage is lightest.

    Exact (dynamic programming over split points, O(stages · blocks²)); ties keep earlier
    stages lighter. ``costs[i]`` is block i's step cost (seconds or flops).

    Raises:
      ValueError: more stages than blocks, or a negative/non-finite cost.
    """
    c = [float(v) for v in costs]
    n = len(c)
    if stages < 1 or stages > n:
        raise ValueError(f"cannot balance {n} blocks over pipeline_stages={stages}; use 1 to "
                         f"{n} stages")
    if any(not np.isfinite(v) or v < 0 for v in c):
        raise ValueError(f"block costs must be finite and >= 0; got {c}")
    prefix = np.concatenate([[0.0], np.cumsum(c)])
    inf = float("inf")
    # best[s][i]: lightest heaviest-stage cost of blocks [0, i) on s stages.
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                v = max(best[s - 1][j], prefix[i] - prefix[j])
                if v < best[s][i] - 1e-12 * max(1.0, abs(v)):
                    best[s][i], cut[s][i] = v, j
    counts, i = [], n
    for s in range(stages, 0, -1):
        j = cut[s][i]
        counts.append(i - j)
        i = j
    return tuple(reversed(counts))


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """Blocks per stage chosen from per-block costs, and the resulting stage costs."""

    by: str
    block_costs: tuple[float, ...]
    blocks_per_stage: tuple[int, ...]

    @property
    def stage_costs(self) -> tuple[float, ...]:
        out, i = [], 0
        for c in self.blocks_per_stage:
            out.append(sum(self.block_costs[i:i + c]))
            i += c
        return tuple(out)

    @property
    def modelled_speedup(self) -> float:
        """Σ block costs / heaviest stage: the steady-state speedup over sequential AL
        (MODELLED: hand-over and dispatch not included)."""
        return sum(self.block_costs) / max(max(self.stage_costs), 1e-30)

    def report(self, names: Sequence[str]) -> str:
        unit = "MFLOP" if self.by == "flops" else "ms"
        scale = 1e-6 if self.by == "flops" else 1e3
        lines, i = [f"stage plan by {self.by}: blocks per stage {self.blocks_per_stage}, "
                    f"MODELLED steady-state speedup {self.modelled_speedup:.2f}x"], 0
        for k, c in enumerate(self.blocks_per_stage):
            blocks = ", ".join(names[i:i + c])
            lines.append(f"  stage {k}: {blocks}: {self.stage_costs[k] * scale:.3f} {unit}")
            i += c
        return "\n".join(lines)


def block_costs(steps: Sequence, states: Sequence[Any], shapes: Sequence[tuple], by: str,
                reps: int = 3) -> tuple[float, ...]:
    """Cost of every block's step at its input shapes (``shapes[i]`` = (s, y) of block i)."""
    if by not in BALANCE:
        raise ValueError(f"unknown stage balance {by!r}; choose one of: {', '.join(BALANCE)}")
    out = []
    for step, st, (s, y) in zip(steps, states, shapes):
        if by == "flops":
            fn = jax.jit(step).lower(st, s, y).compile()
            analysis = fn.cost_analysis()
            if isinstance(analysis, (list, tuple)):
                analysis = analysis[0] if analysis else {}
            out.append(float((analysis or {}).get("flops", 0.0)))
        else:
            zeros = jax.tree.map(lambda a: jax.numpy.zeros(a.shape, a.dtype), (s, y))
            out.append(schedule.measure(step, st, *zeros, reps=reps).seconds)
    return tuple(out)


def plan(steps: Sequence, states: Sequence[Any], shapes: Sequence[tuple], stages: int,
         by: str) -> StagePlan:
    """The balanced :class:`StagePlan` of ``stages`` stages by ``by`` (flops or time)."""
    costs = block_costs(steps, states, shapes, by)
    return StagePlan(by, costs, balance_blocks(costs, stages))
