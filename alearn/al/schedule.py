"""Schedule accounting of the AL pipeline and its *modelled* makespan.

AL journal abstract: a pipeline of N blocks trains n micro-batches in O(n + N) block steps
instead of O(nN). This module counts what the pipeline ran (ticks, busy ticks per stage,
bubble fraction), measures what one block step costs on one device (wall time and XLA's
``cost_analysis`` flops), and models the makespan of

- sequential AL: ``n · Σ_k c_k`` (every block step one after another on one device);
- the lock-step pipeline (this implementation): ``(n + N − 1) · max_k c_k`` (a tick lasts
  as long as the slowest stage);
- BP on one device: ``n · c_BP`` (a whole-network forward + backward + update per
  micro-batch).

The model ignores the hand-over (ppermute) time and dispatch overhead: it is a model, not
a measurement, and reports label it so.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Sequence

import jax
from absl import logging


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What a pipeline ran: ``ticks`` over ``stages``, ``busy[k]`` real steps of stage k."""

    micro_batches: int
    stages: int
    ticks: int
    busy: tuple[int, ...]

    @classmethod
    def ideal(cls, micro_batches: int, stages: int) -> "Schedule":
        """The fill-run-drain schedule: n + N − 1 ticks, every stage busy n of them."""
        return cls(micro_batches, stages, micro_batches + stages - 1, (micro_batches,) * stages)

    @property
    def utilisation(self) -> float:
        """Busy stage-ticks / all stage-ticks (= n / (n + N − 1) for one drained run)."""
        return sum(self.busy) / max(1, self.stages * self.ticks)

    @property
    def bubble_fraction(self) -> float:
        """Idle stage-ticks / all stage-ticks."""
        return 1.0 - self.utilisation


@dataclasses.dataclass(frozen=True)
class StepCost:
    """Cost of one step on one device: wall seconds (fastest of the timed runs) and flops."""

    seconds: float
    flops: float

    def __add__(self, other: "StepCost") -> "StepCost":
        return StepCost(self.seconds + other.seconds, self.flops + other.flops)


def measure(fn: Callable, *args: Any, reps: int = 5, device: jax.Device | None = None
            ) -> StepCost:
    """Wall time of ``jax.jit(fn)(*args)`` (fastest of ``reps`` runs) and its XLA flops.

    The fastest run is the least disturbed one on a shared machine (the median is logged).
    Arguments are placed on ``device`` (default: the first local device); the first call
    (compilation) is excluded.
    """
    device = device or jax.local_devices()[0]
    args = jax.device_put(args, device)
    jitted = jax.jit(fn)
    analysis = jitted.lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax returned one dict per program
        analysis = analysis[0] if analysis else {}
    flops = float((analysis or {}).get("flops", float("nan")))
    jax.block_until_ready(jitted(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - t0)
    logging.info("measured %s: min %.6f s, median %.6f s over %d runs",
                 getattr(fn, "__name__", "step"), min(times), statistics.median(times), reps)
    return StepCost(min(times), flops)


def stage_costs(block_costs: Sequence[StepCost], groups: Sequence[Sequence[int]]
                ) -> list[StepCost]:
    """Cost of each stage: the sum of its blocks' step costs."""
    out = []
    for g in groups:
        total = StepCost(0.0, 0.0)
        for b in g:
            total = total + block_costs[b]
        out.append(total)
    return out


def modelled_makespan(stage_cost: Sequence[float], micro_batches: int,
                      bp_cost: float | None = None) -> dict[str, float]:
    """MODELLED makespans (same unit as the costs) and speedups; see the module docstring.

    Returns ``sequential_al``, ``pipeline``, ``speedup_vs_sequential_al`` and, with
    ``bp_cost``, ``bp`` and ``speedup_vs_bp``. Communication is not modelled.
    """
    n, stages = micro_batches, len(stage_cost)
    seq = n * sum(stage_cost)
    pipe = (n + stages - 1) * max(stage_cost)
    out = {"sequential_al": seq, "pipeline": pipe, "speedup_vs_sequential_al": seq / pipe}
    if bp_cost is not None:
        out.update(bp=n * bp_cost, speedup_vs_bp=n * bp_cost / pipe)
    return out


def format_report(schedule: Schedule, costs: Sequence[StepCost] | None = None,
                  bp: StepCost | None = None) -> str:
    """A plain-text report: schedule, per-stage costs and the modelled makespans."""
    lines = [f"schedule: n={schedule.micro_batches} micro-batches, N={schedule.stages} "
             f"stages, ticks={schedule.ticks}, busy per stage={list(schedule.busy)}, "
             f"utilisation={schedule.utilisation:.4f}, bubble={schedule.bubble_fraction:.4f}"]
    if costs:
        for k, c in enumerate(costs):
            lines.append(f"  stage {k}: {c.seconds * 1e3:.3f} ms/step (measured, one device), "
                         f"{c.flops / 1e6:.2f} MFLOP (XLA cost_analysis)")
        for unit, vals, ref in (("time", [c.seconds for c in costs], bp and bp.seconds),
                                ("flops", [c.flops for c in costs], bp and bp.flops)):
            m = modelled_makespan(vals, schedule.micro_batches, ref)
            text = (f"  MODELLED by {unit}: speedup over sequential AL "
                    f"{m['speedup_vs_sequential_al']:.2f}x")
            if "speedup_vs_bp" in m:
                text += f", over BP {m['speedup_vs_bp']:.2f}x"
            lines.append(text)
    return "\n".join(lines)
