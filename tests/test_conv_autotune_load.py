"""The conv autotuner is not fooled by load (alearn/_layers/conv_autotune.py, issue 27).

A fake machine (CPU counters: each sample one second later, other processes using
``load`` of two CPUs) and a fake timer (a time per form) drive ``conv_autotune.autotune``
directly, so nothing is compiled or really timed; a "new process" is a fresh memory and
process state over the same cache file. The last tests cover the load measurement
(alearn/_cpu_load.py) and read the real /proc counters.
"""

import json
import os
import time

import jax.numpy as jnp
import pytest

from alearn import _cpu_load
from alearn._layers import conv_autotune

MS = 1e-3


def _form(name):
    def fn(a, b):
        raise AssertionError("the fake timer never runs a form")
    fn.form = name
    return fn


CANDIDATES = {name: _form(name) for name in ("xla", "im2col")}


class Machine:
    """Fake CPU counters; ``on_sleep`` runs when the autotuner waits (e.g. the load lifts)."""

    def __init__(self):
        self.load, self.wall, self.busy = 0.0, 0.0, 0.0
        self.sleeps, self.on_sleep = [], None

    def counters(self):
        self.wall += 1.0
        self.busy += 2 * self.load  # other processes' CPU time over the last second
        return _cpu_load.Counters(self.wall, self.busy, 0.0, 2)

    def sleep(self, s):
        self.sleeps.append(s)
        if self.on_sleep:
            self.on_sleep()


class Timer:
    """Fake ``_best_time``: ``times[form]`` seconds; records which forms were timed."""

    def __init__(self, **times):
        self.times, self.calls = times, []

    def __call__(self, fn, args, reps=5):
        self.calls.append(fn.form)
        return self.times[fn.form]


@pytest.fixture
def tuner(monkeypatch, tmp_path):
    path = tmp_path / "conv.json"
    machine, timer = Machine(), Timer(xla=2 * MS, im2col=1 * MS)
    clock = [1.8e9]  # wall-clock seconds for the entries' stamps
    monkeypatch.setenv("ALEARN_CONV_CACHE", str(path))
    monkeypatch.delenv("ALEARN_CONV_RETUNE", raising=False)
    monkeypatch.setattr(_cpu_load, "counters", machine.counters)
    monkeypatch.setattr(_cpu_load, "_sleep", machine.sleep)  # (windows here are 1 s: unused)
    monkeypatch.setattr(conv_autotune, "_sleep", machine.sleep)
    monkeypatch.setattr(conv_autotune, "_now", lambda: clock[0])
    monkeypatch.setattr(conv_autotune, "_best_time", timer)

    class Tuner:
        def __init__(self):
            self.machine, self.timer, self.path, self.clock = machine, timer, path, clock
            self.new_process()

        def new_process(self):
            monkeypatch.setattr(conv_autotune, "_MEMORY", {})
            monkeypatch.setattr(conv_autotune, "_PROCESS", conv_autotune._Process())

        def __call__(self, key="k", candidates=CANDIDATES):
            return conv_autotune.autotune("apply", candidates, ((1,), (1,)), jnp.float32, key)

        def entry(self, key="k"):
            return json.loads(path.read_text())[f"{conv_autotune._machine()}|{key}"]

    return Tuner()


def test_a_timing_under_load_serves_this_process_only_and_is_retimed_when_quiet(tuner):
    tuner.machine.load = 0.9
    assert tuner() == "im2col"
    assert tuner.timer.calls == ["xla", "im2col"]  # the waits were loaded too: no retiming
    assert tuner.machine.sleeps == list(conv_autotune.RETRY_WAITS)
    e = tuner.entry()
    assert e["loaded"] is True and e["load"] == pytest.approx(0.9)
    assert tuner() == "im2col" and len(tuner.timer.calls) == 2  # memoised in this process

    tuner.new_process()  # still loaded: the file's choice is used, not retimed
    assert tuner() == "im2col" and len(tuner.timer.calls) == 2

    tuner.new_process()  # quiet now, and XLA's form is the faster one
    tuner.machine.load = 0.0
    tuner.timer.times = {"xla": 0.5 * MS, "im2col": 1 * MS}
    assert tuner() == "xla"
    assert tuner.timer.calls[2:] == ["xla", "im2col"]
    e = tuner.entry()
    assert e["choice"] == "xla" and e["loaded"] is False and e["load"] == 0.0

    tuner.new_process()  # trusted now: reused without timing or waiting
    sleeps = len(tuner.machine.sleeps)
    assert tuner() == "xla" and len(tuner.timer.calls) == 4
    assert len(tuner.machine.sleeps) == sleeps


def test_a_quiet_retiming_replaces_a_loaded_one_and_a_loaded_one_never_a_quiet_one(
        tuner, monkeypatch):
    tuner.machine.load = 0.9  # under load im2col looks faster; the load lifts during the wait

    def lift():
        tuner.machine.load = 0.0
        tuner.timer.times = {"xla": 0.5 * MS, "im2col": 1 * MS}

    tuner.machine.on_sleep = lift
    assert tuner() == "xla"
    assert tuner.timer.calls == ["xla", "im2col"] * 2 and tuner.machine.sleeps == [0.5]
    e = tuner.entry()
    assert e["choice"] == "xla" and e["loaded"] is False and e["times_ms"]["xla"] == 0.5

    tuner.new_process()  # forced retiming under load: this process only, the file keeps xla
    monkeypatch.setenv("ALEARN_CONV_RETUNE", "1")
    tuner.machine.on_sleep = None
    tuner.machine.load = 0.8
    tuner.timer.times = {"xla": 3 * MS, "im2col": 1 * MS}
    assert tuner() == "im2col"
    assert tuner.entry() == e
    monkeypatch.delenv("ALEARN_CONV_RETUNE")
    tuner.new_process()
    assert tuner() == "xla"


def test_waits_are_bounded_per_process_and_the_least_loaded_timing_is_kept(
        tuner, monkeypatch):
    tuner.machine.load = 0.9
    for key in "abc":
        tuner(key)
    assert tuner.timer.calls == ["xla", "im2col"] * 3  # no retiming: every wait was loaded
    # a and b wait RETRY_WAITS each; then the process's budget is spent: c does not wait.
    assert tuner.machine.sleeps == list(conv_autotune.RETRY_WAITS) * 2
    assert sum(tuner.machine.sleeps) <= conv_autotune.WAIT_BUDGET_S

    monkeypatch.setenv("ALEARN_CONV_RETUNE", "1")  # loaded timings: the less loaded is kept
    tuner.new_process()
    tuner.machine.load = 0.95
    tuner("a")
    assert tuner.entry("a")["load"] == pytest.approx(0.9)
    tuner.new_process()
    tuner.machine.load = 0.5
    tuner("a")
    assert tuner.entry("a")["load"] == pytest.approx(0.5) and tuner.entry("a")["loaded"]


def test_the_cache_records_every_forms_time_the_load_and_when(tuner):
    tuner.machine.load = 0.1  # quiet enough
    tuner()
    e = tuner.entry()
    assert e["choice"] == "im2col"
    assert e["times_ms"] == {"xla": 2.0, "im2col": 1.0}
    assert e["load"] == pytest.approx(0.1) and e["loaded"] is False
    assert e["timed_at"] == e["checked_at"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(tuner.clock[0]))


def test_a_cached_choice_much_slower_than_recorded_is_retimed(tuner):
    tuner()  # quiet: im2col, 1 ms
    entry = tuner.entry()
    tuner.new_process()  # checked within the hour: no timing at all
    assert tuner() == "im2col" and len(tuner.timer.calls) == 2

    tuner.clock[0] += 2 * conv_autotune.CHECK_AGE_S
    tuner.new_process()  # due for a check, 1.2x slower: kept, next check in an hour
    tuner.timer.times["im2col"] = 1.2 * MS
    assert tuner() == "im2col" and tuner.timer.calls[2:] == ["im2col"]
    assert tuner.entry()["checked_at"] != entry["checked_at"]
    assert tuner.entry()["times_ms"] == entry["times_ms"]

    tuner.clock[0] += 2 * conv_autotune.CHECK_AGE_S
    tuner.new_process()  # 3x slower, but the machine is busy: no verdict, nothing changes
    tuner.timer.times["im2col"] = 3 * MS
    tuner.machine.load = 0.9
    checked = tuner.entry()
    assert tuner() == "im2col" and tuner.timer.calls[3:] == ["im2col"]
    assert tuner.entry() == checked

    tuner.new_process()  # 3x slower on a quiet machine: all forms retimed, xla now faster
    tuner.machine.load = 0.0
    assert tuner() == "xla"
    assert tuner.timer.calls[4:] == ["im2col", "xla", "im2col"]
    e = tuner.entry()
    assert e["choice"] == "xla" and e["times_ms"] == {"xla": 2.0, "im2col": 3.0}


def test_one_check_per_process_unless_a_check_finds_a_stale_entry(tuner):
    for key in "abc":
        tuner(key)
    tuner.clock[0] += 2 * conv_autotune.CHECK_AGE_S
    tuner.new_process()
    for key in "abc":  # a is checked (fine); b and c are not checked in this process
        tuner(key)
    assert tuner.timer.calls[6:] == ["im2col"]

    tuner.new_process()  # b is checked and stale: c is checked too
    tuner.timer.times["im2col"] = 4 * MS
    for key in "abc":
        tuner(key)
    assert tuner.timer.calls[7:] == ["im2col", "xla", "im2col", "im2col", "xla", "im2col"]
    assert tuner.entry("a")["choice"] == "im2col"  # checked in the last hour
    assert tuner.entry("b")["choice"] == tuner.entry("c")["choice"] == "xla"


def test_older_entries_without_times_are_retimed_on_a_quiet_machine(tuner):
    key = f"{conv_autotune._machine()}|k"
    tuner.path.write_text(json.dumps({key: "im2col", "other|key": "banded"}))
    tuner.machine.load = 0.9  # busy: the old choice is used as it is
    assert tuner() == "im2col" and tuner.timer.calls == []
    assert json.loads(tuner.path.read_text())[key] == "im2col"

    tuner.new_process()  # quiet: retimed and replaced; other entries are kept
    tuner.machine.load = 0.0
    tuner.timer.times = {"xla": 0.5 * MS, "im2col": 1 * MS}
    assert tuner() == "xla" and tuner.timer.calls == ["xla", "im2col"]
    data = json.loads(tuner.path.read_text())
    assert data[key]["choice"] == "xla" and data[key]["loaded"] is False
    assert data["other|key"] == "banded"

    tuner.new_process()  # a choice among other forms than the ones offered is not reused
    tuner.path.write_text(json.dumps({key: {**data[key], "choice": "banded"}}))
    assert tuner() == "xla" and len(tuner.timer.calls) == 4
    assert tuner.entry()["choice"] == "xla"


def test_retune_env_retimes_or_checks_every_shape(tuner, monkeypatch):
    tuner("a"), tuner("b")
    tuner.new_process()
    monkeypatch.setenv("ALEARN_CONV_RETUNE", "1")
    tuner("a"), tuner("a")
    assert tuner.timer.calls[4:] == ["xla", "im2col"]  # once per process
    tuner.new_process()
    monkeypatch.setenv("ALEARN_CONV_RETUNE", "check")  # recently checked, checked anyway
    tuner("a"), tuner("b")
    assert tuner.timer.calls[6:] == ["im2col", "im2col"]
    tuner.new_process()
    monkeypatch.setenv("ALEARN_CONV_RETUNE", "sometimes")
    with pytest.raises(ValueError, match="ALEARN_CONV_RETUNE='sometimes'"):
        tuner("c")


# ------------------------------------------------------------------------ the counters


def test_busy_ticks_count_our_cpus_without_idle_or_low_priority_time():
    stat = ("cpu  100 50 30 900 20 1 2 3 7 0\n"
            "cpu0 60 40 10 400 10 1 1 2 7 0\n"  # 7 guest ticks are inside user's 60
            "cpu1 40 10 20 500 10 0 1 1 0 0\n"
            "intr 1 2 3\n")
    assert _cpu_load._busy_ticks(stat, None, niced=False) == (60 + 10 + 1 + 1 + 2 + 40 + 20 + 1 + 1,
                                                              2)
    assert _cpu_load._busy_ticks(stat, {1}, niced=False) == (40 + 20 + 1 + 1, 1)
    assert _cpu_load._busy_ticks(stat, {1}, niced=True) == (40 + 10 + 20 + 1 + 1, 1)
    own = "4242 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 17 5 99 99 20 0 8 0 1234"
    assert _cpu_load._own_ticks(own) == 17 + 5  # utime, stime: not the children's 99, 99


def test_foreign_load_subtracts_our_own_time_and_falls_back_to_the_load_average():
    c = _cpu_load.Counters
    assert _cpu_load.foreign(c(0.0, 10.0, 1.0, 2), c(2.0, 12.0, 2.5, 2)) == 0.125
    assert _cpu_load.foreign(c(0.0, 10.0, 1.0, 2), c(2.0, 10.5, 2.5, 2)) == 0.0
    assert _cpu_load.foreign(c(0.0, None, 1.0, 2, 0.5), c(2.0, None, 3.0, 2, 1.5)) == 0.25
    assert _cpu_load.foreign(c(0.0, None, 1.0, 2), c(2.0, None, 3.0, 2)) is None
    quiet = conv_autotune._quiet
    assert quiet(None) and quiet(0.25) and not quiet(0.3)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_the_real_counters_see_this_process_spin():
    c0 = _cpu_load.counters()
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:
        pass
    c1 = _cpu_load.counters()
    tick = 1 / _cpu_load._clk_tck()
    assert c1.ncpu >= 1 and c1.busy is not None
    assert 0.3 - 3 * tick <= c1.own - c0.own <= 0.3 + 0.1  # (other threads of ours: little)
    assert c1.busy - c0.busy >= c1.own - c0.own - 3 * tick * c1.ncpu
    assert 0.0 <= _cpu_load.foreign(c0, c1) <= 1.0


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_cpu_load_window():
    load = _cpu_load.CpuLoad()
    assert load.foreign() is None  # not started
    load.start()
    t0 = time.monotonic()
    assert 0.0 <= load.foreign() <= 1.0
    assert time.monotonic() - t0 >= _cpu_load.MIN_WINDOW_S - 0.01  # a short window waits
