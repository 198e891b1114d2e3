"""Test configuration: 8 forced host CPU devices (set before JAX is imported).

XLA's CPU backend compiles at LLVM optimisation level 0: most of the suite's time is
compiling many small programs once each, and level 0 compiles them ~40 % faster
(docs/notes/models.md). HLO optimisation (fusion, layout, copy insertion) is unchanged, so
every oracle still checks the programs XLA builds; only the machine code is less tuned.

Many tests compile the same programs (the same model and rule in several tests, and the
binary's programs in every subprocess of the kill/resume and README tests), so the session
shares JAX's persistent compilation cache: a fresh directory per test session (created by
the first process that imports this file; xdist workers and subprocesses inherit it through
the environment, and the controller removes it at exit), every program cached whatever its
compile time. A cached program is the same executable XLA would build again.
"""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="alearn-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# glibc as it comes: alearn's allocator setting (one arena, alearn/_malloc.py) makes steps
# with large temp buffers faster but compiles ~15 % slower, and the suite is mostly compiles;
# tests/test_malloc.py runs its probes with the setting on, in fresh interpreters.
os.environ.setdefault("ALEARN_MALLOC", "0")
# Convolutions: XLA's form everywhere, no per-shape autotuning (it would time every conv
# shape the suite compiles); tests/test_conv_impl.py covers the other forms and the autotuner.
os.environ.setdefault("ALEARN_CONV_IMPL", "xla")
