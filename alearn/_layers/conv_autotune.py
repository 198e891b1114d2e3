"""Which convolution form to use per shape: forced, XLA off CPU, or timed on CPU and cached.

The forms (XLA's convolution, im2col, banded) are in :mod:`alearn._layers.conv_impl`; all
are exact, and which is faster depends on the shape and the machine, so each of the three
products (``apply``, ``input_grad``, ``weight_grad``) is chosen per shape (:func:`resolve`):

- ``impl="xla"``, ``"im2col"`` or ``"banded"`` forces a form;
- ``impl="auto"`` (the default) uses XLA's convolution off CPU (GPU/TPU have fast
  convolutions) and on CPU times the forms once per distinct shape at trace time
  (compiled, warm, best of a few runs) and keeps the fastest (the banded form only where
  its band matrix is small and its overhead Wp/kw moderate: ``conv_impl.banded_fits``).
  Choices are cached in memory and in a JSON file (``$ALEARN_CONV_CACHE``, default
  ``~/.cache/alearn/conv_autotune.json``; set it to the empty string to keep choices in
  memory only), keyed by shape, jax version and processor, so a shape is normally timed
  once per machine. Each file entry records the times of all forms and the load of other
  processes while they were timed (:mod:`alearn._cpu_load`): a timing under load (>
  ``LOAD_MAX`` of the CPUs) is retried after short waits, and if the machine stays busy it
  serves this process only and is retimed by a later process that finds the machine quiet;
  a trusted entry is checked now and then (its chosen form timed once, at most one per
  process and hour) and retimed if it has become much slower than recorded.
  ``ALEARN_CONV_RETUNE=1`` retimes every shape, ``ALEARN_CONV_RETUNE=check`` checks every
  cached one.
- The environment variable ``ALEARN_CONV_IMPL`` (``xla``, ``im2col``, ``banded`` or
  ``auto``) overrides ``"auto"`` for a whole process (the test suite uses ``xla`` to skip
  autotuning).
"""

from __future__ import annotations

import calendar
import contextlib
import dataclasses
import functools
import json
import os
import tempfile
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from alearn import _native as native
from alearn._cpu_load import CpuLoad
from alearn._layers.conv_impl import FORMS, IMPLS
from alearn._machine import cpu_model


def _env_impl() -> str:
    impl = os.environ.get("ALEARN_CONV_IMPL", "auto").strip().lower() or "auto"
    if impl not in IMPLS:
        raise ValueError(f"ALEARN_CONV_IMPL={impl!r}; choose one of: {', '.join(IMPLS)}")
    return impl


_RETUNE = {"": "", "0": "", "false": "", "no": "", "off": "",
           "1": "all", "true": "all", "yes": "all", "on": "all", "all": "all",
           "check": "check"}


def _env_retune() -> str:
    """``ALEARN_CONV_RETUNE``: "" (use the cache), "all" (retime every shape) or "check"."""
    raw = os.environ.get("ALEARN_CONV_RETUNE", "").strip().lower()
    if raw not in _RETUNE:
        raise ValueError(f"ALEARN_CONV_RETUNE={raw!r}; choose 1 (retime every shape), "
                         "check (check every cached shape) or 0")
    return _RETUNE[raw]


def _cache_path() -> str | None:
    path = os.environ.get("ALEARN_CONV_CACHE")
    if path is None:
        path = os.path.join(os.path.expanduser("~"), ".cache", "alearn", "conv_autotune.json")
    return path or None


_MEMORY: dict[str, str] = {}  # this process's choices


def _machine() -> str:
    # "forms5": choices made among xla/im2col/banded, the chunked XLA weight cotangents and,
    # where it loads, oneDNN's ("dnnl" + its version; older entries chose among fewer forms).
    dnnl = f"+dnnl{native.dnnl_version()}" if native.available() else ""
    return f"jax{jax.__version__}|{cpu_model()}|{os.cpu_count()}cpu|forms5{dnnl}"


# ------------------------------------------------------------------ load while timing
#
# A timing is only as good as the machine was quiet while it ran: another process busy on
# one of two cores makes every form up to 2x slower, and not all by the same factor, so a
# choice timed under load can be the wrong one. Each timing window's foreign load (the CPU
# time other processes used meanwhile, as a fraction of our CPUs) is measured by
# alearn._cpu_load.CpuLoad over windows of at least its MIN_WINDOW_S (0.2 s).

#: A timing is trusted only if other processes used at most this fraction of the CPUs.
LOAD_MAX = 0.25
#: The load since this process's previous sample stands for "the load now" if that sample
#: is at most this old; otherwise the load is measured over a short wait (MIN_WINDOW_S).
RECENT_S = 10.0
#: Waits (s) after a timing taken under load, each followed by a retiming if the machine
#: was quiet during the wait. All waits of one process together: at most WAIT_BUDGET_S.
RETRY_WAITS = (0.5, 1.0)
WAIT_BUDGET_S = 3.0
#: A cached choice is retimed when its form now takes more than STALE_RATIO x (and more
#: than STALE_MIN_S longer than) its recorded time while the machine is quiet.
STALE_RATIO = 1.5
STALE_MIN_S = 50e-6
#: A trusted cache entry is checked (its chosen form timed once) when its last check is
#: older than this; at most one check per process, unless a check finds a stale entry.
CHECK_AGE_S = 3600.0

_sleep = time.sleep
_now = time.time


def _quiet(load: float | None) -> bool:
    """Whether a timing taken under ``load`` is trusted (an unknown load is)."""
    return load is None or load <= LOAD_MAX


@dataclasses.dataclass
class _Process:
    """What one process remembers beyond its choices (tests replace it to start afresh)."""

    load: CpuLoad = dataclasses.field(default_factory=CpuLoad)  # keeps the latest sample
    wait_left: float = WAIT_BUDGET_S
    checks_left: float = 1
    warned: bool = False


_PROCESS = _Process()
_LOCK = threading.RLock()  # one timing at a time: two would load each other unseen


# ------------------------------------------------------------------------ the cache file
#
# Each entry: {"choice": form, "times_ms": {form: best time, ...}, "load": foreign load
# while timing (None: unknown), "loaded": load > LOAD_MAX, "timed_at", "checked_at" (UTC)}.
# Older files hold bare form names ("legacy" entries, no times, load unknown).


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _age(stamp: Any) -> float:
    """Seconds since a stamp (infinite if missing or unreadable)."""
    try:
        return _now() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return float("inf")


def _normalise(v: Any) -> dict | None:
    if isinstance(v, str):
        return {"choice": v, "legacy": True} if v in FORMS else None
    if isinstance(v, dict) and v.get("choice") in FORMS:
        return v
    return None


def _trusted(e: dict) -> bool:
    """Timed on a quiet machine, with the chosen form's time recorded."""
    t = e.get("times_ms")
    return (not e.get("legacy") and e.get("loaded") is False and isinstance(t, dict)
            and isinstance(t.get(e["choice"]), (int, float)) and t[e["choice"]] > 0)


def _better(new: dict, old: dict | None) -> bool:
    """Whether a new timing replaces a file entry: a loaded timing never replaces a quiet
    one; among loaded ones the less loaded is kept."""
    if old is None or not _trusted(old) and (old.get("legacy") or old.get("load") is None):
        return True
    if not new["loaded"]:
        return True
    return not _trusted(old) and new["load"] <= old["load"]


def _read_raw(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _load(path: str) -> dict[str, dict]:
    """The cache file's entries (legacy ones as {"choice", "legacy": True}); unreadable: {}."""
    return {k: e for k, v in _read_raw(path).items() if (e := _normalise(v)) is not None}


@contextlib.contextmanager
def _file_lock(path: str):
    """An exclusive lock beside the cache file, so processes do not drop each other's entries."""
    try:
        import fcntl
    except ImportError:  # not POSIX: last writer wins
        yield
        return
    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _update(path: str, key: str, fn: Callable[[dict | None], dict | None]) -> None:
    """Re-reads the file and writes ``fn(old entry)`` at ``key`` unless it returns None."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with _file_lock(path):
            data = _read_raw(path)
            entry = fn(_normalise(data.get(key)))
            if entry is None:
                return
            data[key] = entry
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=0, sort_keys=True)
            os.replace(tmp, path)
    except OSError as e:  # a read-only home must not stop training
        logging.warning("conv autotune: cannot write %s (%s); choices stay in memory", path, e)


# ------------------------------------------------------------------------------ timing


def _best_time(fn: Callable, args: tuple, reps: int = 5) -> float:
    f = jax.jit(fn)
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def _time_forms(candidates: dict[str, Callable], args: tuple) -> dict:
    """Times every form (compiled, warm, best of 5) and the foreign load meanwhile."""
    window = _PROCESS.load.start()
    times = {name: _best_time(fn, args) for name, fn in candidates.items()}
    load = window.foreign()
    choice = min(times, key=times.get)
    return {"choice": choice, "times_ms": {n: round(t * 1e3, 4) for n, t in times.items()},
            "load": None if load is None else round(load, 3), "loaded": not _quiet(load),
            "timed_at": _stamp(_now()), "checked_at": _stamp(_now())}


def _timed(candidates: dict[str, Callable], args: tuple, key: str) -> dict:
    """Times the forms; under load, waits (RETRY_WAITS, within the process's WAIT_BUDGET_S)
    and retimes if the wait was quiet. Returns the quiet timing, else the least loaded."""
    tries = [_time_forms(candidates, args)]
    for wait in RETRY_WAITS:
        if not tries[-1]["loaded"] or _PROCESS.wait_left < wait:
            break
        _PROCESS.wait_left -= wait
        window = _PROCESS.load.start()
        _sleep(wait)
        if _quiet(window.foreign()):
            tries.append(_time_forms(candidates, args))
    entry = min(tries, key=lambda e: (e["loaded"], e["load"] or 0.0))
    logging.info("conv autotune %s: %s (%s; other processes' load %s%s)", key, entry["choice"],
                 ", ".join(f"{n} {t:.3f} ms" for n, t in entry["times_ms"].items()),
                 entry["load"], ", loaded" if entry["loaded"] else "")
    if entry["loaded"] and not _PROCESS.warned:
        _PROCESS.warned = True
        logging.warning(
            "conv autotune: other processes used %.0f %% of the CPUs while timing convolution "
            "forms (more than %.0f %%); these choices serve this process only and are retimed "
            "by a later process on a quiet machine", 100 * entry["load"], 100 * LOAD_MAX)
    return entry


def _check(entry: dict, fn: Callable, args: tuple, key: str) -> bool | None:
    """Times the cached choice once (compiled, best of 3): True if it is now much slower than
    recorded on a quiet machine, False if not, None if the machine was loaded (no verdict)."""
    window = _PROCESS.load.start()
    t = _best_time(fn, args, reps=3)
    if not _quiet(window.foreign()):
        return None
    was = entry["times_ms"][entry["choice"]] * 1e-3
    stale = t > max(STALE_RATIO * was, was + STALE_MIN_S)
    logging.info("conv autotune %s: cached %s takes %.3f ms (recorded %.3f)%s", key,
                 entry["choice"], t * 1e3, was * 1e3, ": stale, retiming" if stale else "")
    return stale


def autotune(product: str, candidates: dict[str, Callable], arg_shapes: tuple,
             dtype: Any, key: str) -> str:
    """The fastest of the candidate forms of ``product`` for one shape, timed on random inputs.

    ``key`` identifies the shape. Choices are memoised in memory (once per process) and in
    the cache file with their times and the load they were timed under. A file entry is
    reused as it is when trusted (timed on a quiet machine) and not due for a check; a due
    entry (last checked over CHECK_AGE_S ago, one per process) has its chosen form timed
    once and is retimed if that is much slower than recorded; an untrusted entry (timed
    under load, or an older entry without times) is retimed if the machine is quiet now
    and reused otherwise. ``ALEARN_CONV_RETUNE=1`` retimes every shape once per process,
    ``=check`` checks every cached shape.
    """
    full_key = f"{_machine()}|{key}"
    if full_key in _MEMORY:
        return _MEMORY[full_key]
    with _LOCK:
        if full_key in _MEMORY:
            return _MEMORY[full_key]
        _MEMORY[full_key] = choice = _choose(candidates, arg_shapes, dtype, key, full_key)
        return choice


def _choose(candidates, arg_shapes, dtype, key, full_key) -> str:
    path = _cache_path()
    retune = _env_retune()
    entry = _load(path).get(full_key) if path and retune != "all" else None
    if entry is not None and entry["choice"] not in candidates:
        entry = None  # chosen among other forms
    trusted = entry is not None and _trusted(entry)
    if trusted and retune != "check" and (
            _PROCESS.checks_left < 1 or _age(entry.get("checked_at")) <= CHECK_AGE_S):
        return entry["choice"]  # the common path: no timing, no load reading
    rng = np.random.default_rng(0)
    with jax.ensure_compile_time_eval():  # run now, also when called while tracing a step
        args = tuple(jnp.asarray(rng.standard_normal(s), dtype) for s in arg_shapes)
        if trusted:
            _PROCESS.checks_left -= 1
            stale = _check(entry, candidates[entry["choice"]], args, key)
            if not stale:
                if stale is False and path:  # checked on a quiet machine: next check later
                    checked = _stamp(_now())
                    _update(path, full_key, lambda old: {**old, "checked_at": checked}
                            if old is not None and old == entry else None)
                return entry["choice"]
            _PROCESS.checks_left = float("inf")  # one stale entry: check the others too
        elif entry is not None and not _quiet(_PROCESS.load.recent(RECENT_S)):
            return entry["choice"]  # untrusted, but no better timing can be had now
        new = _timed(candidates, args, key)
    if path:
        _update(path, full_key, lambda old: new if _better(new, old) else None)
    return new["choice"]


_PARTITION = threading.local()


@contextlib.contextmanager
def partitioned(devices: int):
    """Within: convolutions are traced for a step partitioned over ``devices`` devices
    (``alearn.train.make_train_step``'s data-parallel mesh). XLA's partitioner replicates a
    custom call's operands instead of splitting it, so the ``dnnl`` form is then not offered:
    each device would convolve the whole batch."""
    prev = getattr(_PARTITION, "devices", 1)
    _PARTITION.devices = int(devices)
    try:
        yield
    finally:
        _PARTITION.devices = prev


def partition_devices() -> int:
    """The device count of the enclosing :func:`partitioned` (1 outside it)."""
    return getattr(_PARTITION, "devices", 1)


@functools.lru_cache(maxsize=None)
def _backend() -> str:
    return jax.default_backend()


def resolve(impl: str, product: str, candidates: dict[str, Callable], arg_shapes: tuple,
            dtype: Any, key: str) -> str:
    """The form to use for ``product``: forced, XLA off CPU, or autotuned on CPU."""
    impl = effective(impl)
    return autotune(product, candidates, arg_shapes, dtype, key) if impl == "auto" else impl


def effective(impl: str) -> str:
    """``impl`` after ``ALEARN_CONV_IMPL`` and the backend: a forced form, "xla" off CPU, or
    "auto" (timed among the candidates)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; choose one of: {', '.join(IMPLS)}")
    if impl == "auto":
        impl = _env_impl()
    if impl == "auto" and _backend() != "cpu":
        return "xla"
    return impl
