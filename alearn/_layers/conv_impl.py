"""Two exact forms of a 2-D convolution and its transposes, chosen per shape on CPU.

XLA:CPU's convolution runs at a fraction of the machine's GEMM speed on the small and
medium convolutions of the papers' networks (LeNet-5, the AlexNet variant, CIFAR ResNets),
and its transposes (the input and weight cotangents every rule asks for) are slower still.
The *im2col* form writes the convolution as one matrix product: the kh·kw shifted windows
of the padded input are sliced out and concatenated on the channel axis ("patches", shape
(N·Ho·Wo, kh·kw·C)), then multiplied by the kernel reshaped to (kh·kw·C, O). Its transposes
are matrix products too: the weight cotangent is patchesᵀ·g, the input cotangent is
col2im(g·Wᵀ) (the transpose of the slicing, a sum of shifted, padded windows).

The *banded* form gathers only the kh input rows each output row reads (kh copies of the
input, not kh·kw) and multiplies them by the kernel laid out as a band matrix over one row
(kh·Wp·C, Wo·O): Wp/kw times the multiply-adds, but one large matrix product instead of a
convolution of few channels. On LeNet-5's 5×5 convolutions (1 → 6 and 6 → 16 channels,
rows of 28 and 12 pixels) it is the fastest form for five of the six products here
(docs/notes/perf.md). Its input cotangent is the linear transpose of the row gathering and
the product; its weight cotangent is rowsᵀ·g followed by the band matrix's transpose.

All forms are exact (equal to ``jax.lax.conv_general_dilated`` and its VJP to float32
rounding: ``tests/test_conv_impl.py``). Which is faster depends on the shape and the machine,
so each of the three products (``apply``, ``input_grad``, ``weight_grad``) is chosen per
shape:

- ``impl="xla"``, ``"im2col"`` or ``"banded"`` forces a form;
- ``impl="auto"`` (the default) uses XLA's convolution off CPU (GPU/TPU have fast
  convolutions) and on CPU times the forms once per distinct shape at trace time
  (compiled, warm, best of a few runs) and keeps the fastest (the banded form only where
  its band matrix is small and its overhead Wp/kw moderate: ``banded_fits``). Choices are
  cached in memory and in a JSON file (``$ALEARN_CONV_CACHE``, default
  ``~/.cache/alearn/conv_autotune.json``; set it to the empty string to keep choices in
  memory only), keyed by shape, jax version and processor, so a shape is normally timed
  once per machine. Each file entry records the times of all forms and the load of other
  processes while they were timed: a timing under load (> ``LOAD_MAX`` of the CPUs) is
  retried after short waits, and if the machine stays busy it serves this process only and
  is retimed by a later process that finds the machine quiet; a trusted entry is checked
  now and then (its chosen form timed once, at most one per process and hour) and retimed
  if it has become much slower than recorded. ``ALEARN_CONV_RETUNE=1`` retimes every
  shape, ``ALEARN_CONV_RETUNE=check`` checks every cached one.
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

from alearn._machine import cpu_model

Array = jax.Array

IMPLS = ("auto", "xla", "im2col", "banded")
FORMS = IMPLS[1:]
PRODUCTS = ("apply", "input_grad", "weight_grad")
_DIMS = ("NHWC", "HWIO", "NHWC")


def explicit_padding(in_shape, kernel_shape, strides, padding) -> tuple[tuple[int, int], ...]:
    """``padding`` ("SAME", "VALID" or pairs) as ((lo, hi), (lo, hi)) for NHWC/HWIO."""
    if isinstance(padding, str):
        return tuple(jax.lax.padtype_to_pads(in_shape[1:3], kernel_shape[:2], strides, padding))
    return tuple(tuple(int(v) for v in p) for p in padding)


def conv_xla(x: Array, w: Array, strides, padding) -> Array:
    """XLA's convolution (NHWC input, HWIO kernel)."""
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DIMS)


def patches(x: Array, kernel_hw: tuple[int, int], strides, pads) -> Array:
    """(N, Ho, Wo, kh·kw·C): the shifted windows of padded x, concatenated on channels.

    The channel order (window row, window column, input channel) matches an HWIO kernel
    reshaped to (kh·kw·C, O).
    """
    (kh, kw), (sh, sw) = kernel_hw, strides
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    ho = (xp.shape[1] - kh) // sh + 1
    wo = (xp.shape[2] - kw) // sw + 1
    cols = [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def conv_im2col(x: Array, w: Array, strides, pads) -> Array:
    """The convolution as patches(x) · reshape(w): one matrix product."""
    kh, kw, c, o = w.shape
    p = patches(x, (kh, kw), strides, pads)
    return jnp.dot(p.reshape(-1, kh * kw * c), w.reshape(kh * kw * c, o)).reshape(
        *p.shape[:3], o)


def weight_grad_im2col(x: Array, g: Array, kernel_shape, strides, pads) -> Array:
    """patches(x)ᵀ · g reshaped to HWIO: the weight cotangent as one matrix product."""
    kh, kw, c, o = kernel_shape
    p = patches(x, (kh, kw), strides, pads).reshape(-1, kh * kw * c)
    return jnp.dot(p.T, g.reshape(-1, o)).reshape(kernel_shape)


def input_grad_im2col(g: Array, w: Array, in_shape, strides, pads,
                      transpose: Callable[[Callable, tuple, Array], Array]) -> Array:
    """col2im(g · Wᵀ): the input cotangent as a matrix product and the patches' transpose.

    ``transpose(fn, shape, ct)`` is the linear transpose used by the caller (it handles
    shard_map's varying axes).
    """
    kh, kw, c, o = w.shape
    gp = jnp.dot(g.reshape(-1, o), w.reshape(kh * kw * c, o).T)
    gp = gp.reshape(*g.shape[:3], kh * kw * c)
    return transpose(lambda x: patches(x, (kh, kw), strides, pads), tuple(in_shape), gp)


def _band_selector(in_w: int, out_w: int, kw: int, sw: int) -> np.ndarray:
    """(in_w, out_w, kw) 0/1 array: 1 where input column p feeds output column q via tap j."""
    sel = np.zeros((in_w, out_w, kw), np.float32)
    for q in range(out_w):
        for j in range(kw):
            sel[sw * q + j, q, j] = 1.0
    return sel


def banded_kernel(w: Array, in_w: int, out_w: int, sw: int) -> Array:
    """The kernel as the (kh·Wp·C, Wo·O) band matrix of one output row's product.

    Entry ((i, p, c), (q, o)) is w[i, p − sw·q, c, o] where 0 ≤ p − sw·q < kw, else 0: each
    entry is one kernel element or zero (a product with a 0/1 selector, so exact).
    """
    kh, kw, c, o = w.shape
    sel = jnp.asarray(_band_selector(in_w, out_w, kw, sw), w.dtype)
    t = jnp.einsum("pqj,ijco->ipcqo", sel, w, precision=jax.lax.Precision.HIGHEST)
    return t.reshape(kh * in_w * c, out_w * o)


def row_windows(x: Array, kh: int, sh: int, pads) -> Array:
    """(N, Ho, kh·Wp·C): for each output row, the kh padded input rows it reads."""
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    ho = (xp.shape[1] - kh) // sh + 1
    rows = [xp[:, i:i + sh * (ho - 1) + 1:sh] for i in range(kh)]
    rows = rows[0][:, :, None] if kh == 1 else jnp.stack(rows, axis=2)  # (N, Ho, kh, Wp, C)
    return rows.reshape(x.shape[0], ho, -1)


def conv_banded(x: Array, w: Array, strides, pads) -> Array:
    """The convolution as rows(x) · band(w): one matrix product per output row.

    Only the kh input rows of each output row are gathered (kh copies of the input, not
    im2col's kh·kw); the kernel becomes a (kh·Wp·C, Wo·O) band matrix, so the product does
    Wp/kw times the convolution's multiply-adds at matrix-product speed. It wins where
    channels are few and rows narrow (LeNet's 5×5 convolutions on 28- and 12-pixel rows);
    ``banded_fits`` keeps it out of the choice where the band matrix is large.
    """
    kh, kw, c, o = w.shape
    (sh, sw) = strides
    rows = row_windows(x, kh, sh, pads)
    in_w = x.shape[2] + sum(pads[1])
    out_w = (in_w - kw) // sw + 1
    y = jnp.dot(rows, banded_kernel(w, in_w, out_w, sw))
    return y.reshape(*rows.shape[:2], out_w, o)


def weight_grad_banded(x: Array, g: Array, kernel_shape, strides, pads) -> Array:
    """rows(x)ᵀ · g, then the band matrix's transpose (the sum along each band diagonal).

    Written out rather than left to ``jax.linear_transpose`` of :func:`conv_banded`, whose
    transpose contracts over the batch and row axes in an order XLA:CPU runs 2× slower.
    """
    kh, kw, c, o = kernel_shape
    rows = row_windows(x, kh, strides[0], pads)
    in_w = x.shape[2] + sum(pads[1])
    out_w = g.shape[2]
    band = jnp.dot(rows.reshape(-1, rows.shape[-1]).T, g.reshape(-1, out_w * o))
    sel = jnp.asarray(_band_selector(in_w, out_w, kw, strides[1]), g.dtype)
    return jnp.einsum("pqj,ipcqo->ijco", sel, band.reshape(kh, in_w, c, out_w, o),
                      precision=jax.lax.Precision.HIGHEST)


#: Largest band matrix (elements) and largest multiply-add overhead (Wp/kw) for which the
#: autotuner tries the banded form.
BANDED_MAX_ELEMENTS = 1 << 22
BANDED_MAX_OVERHEAD = 8.0


def banded_fits(in_shape, kernel_shape, strides, pads) -> bool:
    """Whether the banded form is worth timing for this shape (band matrix size and overhead)."""
    kh, kw, c, o = kernel_shape
    in_w = in_shape[2] + sum(pads[1])
    out_w = (in_w - kw) // strides[1] + 1
    return (kh * in_w * c * out_w * o <= BANDED_MAX_ELEMENTS
            and in_w / kw <= BANDED_MAX_OVERHEAD)


# --------------------------------------------------------------------------- choosing


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
    # "forms3": choices made among xla/im2col/banded (older cache entries chose among two).
    return f"jax{jax.__version__}|{cpu_model()}|{os.cpu_count()}cpu|forms3"


# ------------------------------------------------------------------ load while timing
#
# A timing is only as good as the machine was quiet while it ran: another process busy on
# one of two cores makes every form up to 2x slower, and not all by the same factor, so a
# choice timed under load can be the wrong one. The load is measured as the CPU time that
# *other* processes used while the forms were timed, as a fraction of the CPUs this process
# may run on: (busy CPU time of those CPUs from /proc/stat - this process's own CPU time
# from /proc/self/stat) / (wall time x CPUs). Time of niced processes (nice > 0: the "nice"
# column) is not counted while this process runs at nice 0: the scheduler gives a nice-19
# job ~1.5 % of a core next to it (it is counted when this process is itself niced, since
# its own time is in that column). Where /proc/stat cannot be read, the 1-minute load
# average less this process's own CPU rate stands in (coarse: it lags by about a minute).

#: A timing is trusted only if other processes used at most this fraction of the CPUs.
LOAD_MAX = 0.25
#: Load windows shorter than this are extended by waiting (the kernel counts in 10 ms ticks).
MIN_WINDOW_S = 0.2
#: The load since this process's previous sample stands for "the load now" if that sample
#: is at most this old; otherwise the load is measured over a MIN_WINDOW_S wait.
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


@dataclasses.dataclass(frozen=True)
class _Counters:
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


def _cpu_counters() -> _Counters:
    """The machine's and this process's CPU time now (see the comment above)."""
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
        return _Counters(wall, busy / tck, own / tck, n)
    except (OSError, ValueError, IndexError):
        pass
    try:
        loadavg = os.getloadavg()[0]
    except (AttributeError, OSError):
        loadavg = None
    return _Counters(wall, None, time.process_time(), len(cpus or ()) or os.cpu_count() or 1,
                     loadavg)


def _foreign(c0: _Counters, c1: _Counters) -> float | None:
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


def _quiet(load: float | None) -> bool:
    """Whether a timing taken under ``load`` is trusted (an unknown load is)."""
    return load is None or load <= LOAD_MAX


@dataclasses.dataclass
class _Process:
    """What one process remembers beyond its choices (tests replace it to start afresh)."""

    last: _Counters | None = None  # the latest counter sample
    wait_left: float = WAIT_BUDGET_S
    checks_left: float = 1
    warned: bool = False


_PROCESS = _Process()
_LOCK = threading.RLock()  # one timing at a time: two would load each other unseen


def _sample() -> _Counters:
    c = _cpu_counters()
    _PROCESS.last = c
    return c


def _load_since(c0: _Counters, c1: _Counters | None = None) -> float | None:
    """Foreign load from ``c0`` to now, waiting until the window is MIN_WINDOW_S long."""
    c1 = c1 or _sample()
    short = MIN_WINDOW_S - (c1.wall - c0.wall)
    if short > 0:
        _sleep(short)
        c1 = _sample()
    return _foreign(c0, c1)


def _recent_load() -> float | None:
    """The load of the last seconds: since the previous sample if recent, else over a wait."""
    prev, now = _PROCESS.last, _sample()
    recent = prev is not None and now.wall - prev.wall <= RECENT_S
    return _load_since(prev if recent else now, now)


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
    c0 = _sample()
    times = {name: _best_time(fn, args) for name, fn in candidates.items()}
    load = _load_since(c0)
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
        c0 = _sample()
        _sleep(wait)
        if _quiet(_load_since(c0)):
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
    c0 = _sample()
    t = _best_time(fn, args, reps=3)
    if not _quiet(_load_since(c0)):
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
        elif entry is not None and not _quiet(_recent_load()):
            return entry["choice"]  # untrusted, but no better timing can be had now
        new = _timed(candidates, args, key)
    if path:
        _update(path, full_key, lambda old: new if _better(new, old) else None)
    return new["choice"]


@functools.lru_cache(maxsize=None)
def _backend() -> str:
    return jax.default_backend()


def resolve(impl: str, product: str, candidates: dict[str, Callable], arg_shapes: tuple,
            dtype: Any, key: str) -> str:
    """The form to use for ``product``: forced, XLA off CPU, or autotuned on CPU."""
    if impl not in IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; choose one of: {', '.join(IMPLS)}")
    if impl == "auto":
        impl = _env_impl()
    if impl != "auto":
        return impl
    if _backend() != "cpu":
        return "xla"
    return autotune(product, candidates, arg_shapes, dtype, key)
