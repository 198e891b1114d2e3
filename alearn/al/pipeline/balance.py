"""Stage balancing of the AL pipeline: per-block step costs and the plan built from them.

A pipeline tick lasts as long as its slowest stage, so with more blocks than stages the
blocks are grouped (consecutively) so that the heaviest stage is as light as possible
(:func:`alearn.al.pipeline.placement.balance_blocks`). Costs are XLA's ``cost_analysis``
flops of each block's jitted step (``"flops"``: deterministic, free of machine load) or
its measured wall time on one device (``"time"``: fastest of a few runs).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax

from alearn.al import schedule
from alearn.al.pipeline.placement import balance_blocks

BALANCE = ("flops", "time")


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
