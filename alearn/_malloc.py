"""Keep XLA:CPU's per-call buffers in glibc's heap instead of fresh ``mmap`` regions.

XLA:CPU allocates one temp buffer per executable call (every intermediate of a train step:
234 MB for ResNet-18 x0.25 at batch 128) with ``posix_memalign`` from one of its worker
threads, and frees it when the call ends. Under glibc's defaults a block that size is
always ``mmap``-ed, and ``munmap``-ed on free: every step then faults in every page of the
block again (57,500 minor page faults per ResNet-18 step, the kernel zeroing and charging
each page), which took 23 % of the process's CPU time and 16-22 % of the step's wall time
(docs/notes/perf.md, "What closed the rest"). Numerics are untouched: only where the bytes live.

glibc serves blocks over 64 MB without ``mmap`` only from its main arena, so
:func:`configure` (run by ``import alearn``) sets, through ``mallopt``:

- ``M_ARENA_MAX`` = 1: threads that have not allocated yet (XLA's pool, created when JAX's
  CPU backend starts) share the main arena;
- ``M_MMAP_MAX`` = 0: large blocks come from the heap (``brk``), reused call after call;
- ``M_TRIM_THRESHOLD`` = 2 GiB (the largest ``mallopt`` takes): up to that much freed memory
  at the top of the heap is kept for the next call instead of given back to the kernel.

glibc 2.36's ``posix_memalign`` asks for a little more than the block, so a freed block of
the same size does not always fit the next call's: the heap grows for the first ~20 calls
(to ~6 temp buffers: 790 MB for a 128 MB temp, measured) until freed blocks merge, and
then stays (``tests/test_malloc.py`` checks the calls after that fault in nothing).

It takes effect for threads whose first allocation comes after it, so ``import alearn``
before the first JAX computation (a warning is logged otherwise). It is skipped, and
:data:`STATUS` says why, where the user chose the allocator (any of ``MALLOC_ARENA_MAX``,
``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, a
``glibc.malloc`` tunable, or jemalloc/tcmalloc/mimalloc preloaded), with
``ALEARN_MALLOC=0``, and off glibc (macOS, musl). The cost: the process keeps up to 2 GiB
of freed heap, and all threads share one arena's lock, which makes XLA's compiles ~15 %
slower (ResNet-18 step: 5.1 s against 4.5, medians of 8 processes): worth it where steps
outnumber compiles, as in training; the test suite, nearly all compiles, turns it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: the largest it accepts
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))

_USER_VARS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
              "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

STATUS = "not configured"


def user_choice(environ: Mapping[str, str]) -> str | None:
    """The user's own allocator setting, if any (then :func:`configure` changes nothing)."""
    for var in _USER_VARS:
        if var in environ:
            return f"{var} is set"
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc.malloc"
    preload = environ.get("LD_PRELOAD", "")
    for name in _ALLOCATORS:
        if name in preload:
            return f"{name} is preloaded"
    return None


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - absent off glibc
        return libc
    except (OSError, AttributeError):
        return None


def _backend_started() -> bool:
    """Whether JAX already started a CPU-only backend (its XLA threads then hold arenas)."""
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    started = set(getattr(xla_bridge, "_backends", None) or ())
    return bool(started) and started <= {"cpu"}


def configure(environ: Mapping[str, str] | None = None, libc=None,
              backend_started: bool | None = None) -> str:
    """Apply :data:`SETTINGS` unless the user chose otherwise; returns and records why."""
    global STATUS
    environ = os.environ if environ is None else environ
    if environ.get("ALEARN_MALLOC", "1") == "0":
        STATUS = "off: ALEARN_MALLOC=0"
        return STATUS
    choice = user_choice(environ)
    if choice is not None:
        STATUS = f"left to the user: {choice}"
        return STATUS
    libc = _glibc() if libc is None else libc
    if libc is None:
        STATUS = "off: not glibc"
        return STATUS
    failed = [param for param, value in SETTINGS if libc.mallopt(param, value) != 1]
    if failed:
        STATUS = f"off: mallopt refused {failed}"
        return STATUS
    started = _backend_started() if backend_started is None else backend_started
    if started:
        STATUS = "set after JAX's backend started: threads that allocated keep their arenas"
        logging.getLogger("alearn").warning(
            "alearn set glibc's allocator after JAX's CPU backend started: XLA's threads "
            "that already allocated keep arenas where each call's temp buffer may be "
            "mmap-ed and faulted in again (slower CPU steps). Import alearn before the "
            "first JAX computation, or start Python with MALLOC_ARENA_MAX=1 "
            "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=%d.", TRIM_THRESHOLD)
        return STATUS
    STATUS = "set: one arena, no mmap, 2 GiB trim threshold"
    return STATUS
