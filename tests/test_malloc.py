"""``alearn._malloc``: XLA:CPU's per-call temp buffers stay in glibc's heap.

The oracle is the kernel's own count of minor page faults (``getrusage``) in a fresh
interpreter: a jitted call whose temp buffer is 128 MB faults in all 32,768 of its pages on
every call under glibc's defaults (``ALEARN_MALLOC=0``, the control that shows the test
can fail), and none (the median call) once ``import alearn`` has configured the allocator.
"""

import json
import os
import subprocess
import sys

import pytest

from alearn import _malloc

_PROBE = r"""
import json, os, resource, sys
if os.environ.get("PROBE_JAX_FIRST") == "1":
    import jax
    jax.devices()
import alearn
from alearn import _malloc
import jax, jax.numpy as jnp

@jax.jit
def f(x, w):
    h = jnp.tanh(x @ w) @ w + x
    return h.T @ x  # a 128 MB temp (two 64 MB intermediates), a small output, as in a step

x = jnp.full((262144, 64), 0.01, jnp.float32)  # 64 MB: every intermediate is that size
w = jnp.full((64, 64), 0.02, jnp.float32)
temp = f.lower(x, w).compile().memory_analysis().temp_size_in_bytes
faults = []
for _ in range(24):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults = sorted(faults[-8:])[4]  # the median call once the heap stopped growing (alearn/_malloc.py)
print(json.dumps({"status": _malloc.STATUS, "temp_pages": temp // 4096, "faults": faults}))
"""


def _probe(**env):
    full = {k: v for k, v in os.environ.items()
            if k != "ALEARN_MALLOC" and not k.startswith("MALLOC_")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True,
                         text=True, timeout=300, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


@pytest.mark.skipif(_malloc._glibc() is None, reason="glibc only")
def test_a_steps_temp_buffer_is_reused_instead_of_faulted_in_every_call():
    on = _probe()
    off = _probe(ALEARN_MALLOC="0")
    assert on["temp_pages"] >= 12_000, on  # large enough that glibc would mmap it
    assert on["status"].startswith("set:"), on
    assert off["status"] == "off: ALEARN_MALLOC=0"
    # the control: glibc's defaults fault the whole temp buffer in on every call
    assert off["faults"] > 0.9 * off["temp_pages"], off
    assert on["faults"] < 0.01 * on["temp_pages"], on


@pytest.mark.skipif(_malloc._glibc() is None, reason="glibc only")
def test_importing_alearn_after_jax_started_says_so():
    late = _probe(PROBE_JAX_FIRST="1")
    assert late["status"].startswith("set after JAX's backend started"), late
    # whether it still helps depends on which of XLA's threads had allocated: not claimed
    assert "Import alearn before the first JAX computation" in late["stderr"]
    assert "MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0" in late["stderr"]


class _Libc:
    def __init__(self, answer=1):
        self.calls, self.answer = [], answer

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.answer


def test_configure_sets_one_arena_no_mmap_and_a_trim_threshold():
    libc = _Libc()
    status = _malloc.configure({}, libc=libc, backend_started=False)
    assert status.startswith("set:")
    assert libc.calls == [(-8, 1), (-4, 0), (-1, 2**31 - 1)]  # glibc's M_ARENA_MAX, M_MMAP_MAX, M_TRIM_THRESHOLD


@pytest.mark.parametrize("environ, why", [
    ({"ALEARN_MALLOC": "0"}, "ALEARN_MALLOC=0"),
    ({"MALLOC_ARENA_MAX": "4"}, "MALLOC_ARENA_MAX is set"),
    ({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_ is set"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "GLIBC_TUNABLES sets glibc.malloc"),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "jemalloc is preloaded"),
])
def test_a_users_own_allocator_choice_is_left_alone(environ, why):
    libc = _Libc()
    status = _malloc.configure(environ, libc=libc, backend_started=False)
    assert why in status
    assert libc.calls == []


def test_a_refused_mallopt_is_reported_not_claimed():
    status = _malloc.configure({}, libc=_Libc(answer=0), backend_started=False)
    assert status.startswith("off: mallopt refused")
