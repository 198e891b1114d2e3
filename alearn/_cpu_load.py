"""How much of the machine other processes used during a window (no JAX import).

A timing is only as good as the machine was quiet while it ran: another process busy on one
of two cores makes a program up to 2x slower. The *foreign load* over a window is the CPU
time that other processes used meanwhile, as a fraction of the CPUs this process may run on:
(busy CPU time of those CPUs from /proc/stat - this process's own CPU time from
/proc/self/stat) / (wall time x CPUs). Time of niced processes (nice > 0: the "nice"
column) is not counted while this process runs at nice 0: the scheduler gives a nice-19 job
~1.5 % of a core next to it (it is counted when this process is itself niced, since its own
time is in that column). Where /proc/stat cannot be read, the 1-minute load average less
this process's own CPU rate stands in (coarse: it lags by about a minute); where neither
can be read the load is unknown (None).

``CpuLoad().start()`` ... ``.foreign()`` measures one window; the conv autotuner
(:mod:`alearn._layers.conv_autotune`) and the benchmarks (``experiments/bench``) use it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

#: Windows shorter than this are extended by waiting (the kernel counts in 10 ms ticks).
MIN_WINDOW_S = 0.2

_sleep = time.sleep


@dataclasses.dataclass(frozen=True)
class Counters:
    """One sample of the CPU counters (seconds)."""

    wall: float  # time.monotonic()
    busy: float | None  # CPU time of all processes on our CPUs (None: no /proc/stat)
    own: float  # CPU time of this process
    ncpu: int
    loadavg: float | None = None  # 1-minute load average (fallback only)


def _niced() -> bool:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0) > 0
    except (AttributeError, OSError):
        return False


def _busy_ticks(proc_stat: str, cpus: set[int] | None, niced: bool) -> tuple[int, int]:
    """(busy ticks, CPUs) summed over ``cpus`` (all CPUs if None) from /proc/stat's text.

    Busy = user + system + irq + softirq + steal (+ nice if this process is itself niced,
    where its own time is counted); idle and iowait are not busy, guest is inside user.
    """
    rows = [ln.split() for ln in proc_stat.splitlines() if ln.startswith("cpu")]
    per_cpu = [r for r in rows if r[0] != "cpu"]
    if cpus is not None:
        per_cpu = [r for r in per_cpu if int(r[0][3:]) in cpus]
    if not per_cpu:  # no per-CPU lines: the aggregate over all CPUs
        per_cpu = [r for r in rows if r[0] == "cpu"]
        n = os.cpu_count() or 1
    else:
        n = len(per_cpu)
    busy = 0
    for r in per_cpu:
        v = [int(x) for x in r[1:9]] + [0] * (8 - len(r[1:9]))  # user nice system idle
        busy += v[0] + v[2] + v[5] + v[6] + v[7] + (v[1] if niced else 0)  # iowait irq ...
    return busy, n


def _own_ticks(self_stat: str) -> int:
    """utime + stime (fields 14 and 15) from /proc/self/stat's text (all threads)."""
    fields = self_stat.rsplit(")", 1)[1].split()  # field 3 (state) is fields[0]
    return int(fields[11]) + int(fields[12])


@functools.lru_cache(maxsize=None)
def _clk_tck() -> int:
    return os.sysconf("SC_CLK_TCK")


def counters() -> Counters:
    """The machine's and this process's CPU time now (see the module docstring)."""
    wall = time.monotonic()
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    try:
        with open("/proc/stat") as f:
            busy, n = _busy_ticks(f.read(), cpus, _niced())
        with open("/proc/self/stat") as f:
            own = _own_ticks(f.read())
        tck = _clk_tck()
        return Counters(wall, busy / tck, own / tck, n)
    except (OSError, ValueError, IndexError):
        pass
    try:
        loadavg = os.getloadavg()[0]
    except (AttributeError, OSError):
        loadavg = None
    return Counters(wall, None, time.process_time(), len(cpus or ()) or os.cpu_count() or 1,
                    loadavg)


def foreign(c0: Counters, c1: Counters) -> float | None:
    """The fraction of our CPUs other processes used between two samples (None: unknown)."""
    dt = c1.wall - c0.wall
    if dt <= 0:
        return None
    own = max(0.0, c1.own - c0.own)
    if c0.busy is not None and c1.busy is not None:
        other = max(0.0, (c1.busy - c0.busy) - own) / dt
    elif c1.loadavg is not None:
        other = max(0.0, c1.loadavg - own / dt)
    else:
        return None
    return min(1.0, other / max(1, c1.ncpu))


class CpuLoad:
    """The foreign load over a window: ``start()``, then ``foreign()`` (None: unknown).

    A window shorter than ``min_window_s`` is extended by waiting. ``last`` is the latest
    sample taken, so ``recent(within_s)`` can report the load since then without a wait.
    """

    def __init__(self, min_window_s: float = MIN_WINDOW_S):
        self.min_window_s = min_window_s
        self.last: Counters | None = None
        self._start: Counters | None = None

    def _sample(self) -> Counters:
        self.last = counters()
        return self.last

    def start(self) -> CpuLoad:
        """Starts a window now."""
        self._start = self._sample()
        return self

    def foreign(self) -> float | None:
        """The foreign load since ``start()`` (None if not started or unknown)."""
        return None if self._start is None else self._until(self._sample())

    def recent(self, within_s: float) -> float | None:
        """The load of the last seconds: since the previous sample if at most ``within_s``
        old, else over a ``min_window_s`` wait from now."""
        prev, now = self.last, self._sample()
        self._start = prev if prev is not None and now.wall - prev.wall <= within_s else now
        return self._until(now)

    def _until(self, c1: Counters) -> float | None:
        short = self.min_window_s - (c1.wall - self._start.wall)
        if short > 0:
            _sleep(short)
            c1 = self._sample()
        return foreign(self._start, c1)
