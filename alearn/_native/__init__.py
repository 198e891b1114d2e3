"""oneDNN's convolutions as XLA custom calls on CPU: built on first use, or refused with why.

XLA:CPU's own convolutions run at a fifth of the machine's speed on the CIFAR ResNet and
AlexNet shapes, and their weight cotangents slower still (docs/notes/perf.md, "Conv nets at
realistic widths"); oneDNN, the kernel library PyTorch's CPU convolutions use, runs them
near the FMA peak. ``dnnl_conv.cc`` wraps its forward convolution and both transposes as
three XLA FFI handlers (f32, NHWC/HWIO, exact arithmetic); :mod:`alearn._layers.conv_impl`
offers them to the autotuner as the form ``"dnnl"``.

The shared library is compiled here with the machine's C++ compiler, against the oneDNN
wheel (``onednn-devel-cpu-gomp``, a dependency of alearn on Linux x86-64) and jaxlib's FFI
headers, into ``~/.cache/alearn/native/<hash>/`` (``ALEARN_NATIVE_CACHE``), once per source,
jaxlib and oneDNN version; concurrent processes (pytest-xdist workers) build it once, under
a file lock. ``ALEARN_NATIVE=0`` turns it off. When anything is missing (no compiler, no
oneDNN, another platform) :func:`available` is False, :func:`why_unavailable` says what to
install, and the autotuner chooses among XLA's forms as before; ``impl="dnnl"`` then raises
with that reason.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import threading

import jax

_SOURCE = os.path.join(os.path.dirname(__file__), "dnnl_conv.cc")
TARGETS = ("alearn_dnnl_conv_fwd", "alearn_dnnl_conv_input_grad",
           "alearn_dnnl_conv_weight_grad")
_INSTALL = ("pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0 (and a "
            "C++ compiler: apt-get install g++)")
_LOCK = threading.Lock()
_STATE: dict = {}


def _enabled() -> bool:
    return os.environ.get("ALEARN_NATIVE", "1").strip().lower() not in ("0", "false", "no",
                                                                        "off")


def _dnnl_prefix() -> str | None:
    """The prefix holding include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so (the wheel's data
    files land in the environment's prefix), or ``ALEARN_DNNL_ROOT``."""
    roots = [os.environ.get("ALEARN_DNNL_ROOT", ""), sys.prefix,
             sysconfig.get_paths()["data"], "/usr", "/usr/local"]
    for root in filter(None, roots):
        if (os.path.exists(os.path.join(root, "include", "oneapi", "dnnl", "dnnl.hpp"))
                and glob.glob(os.path.join(root, "lib*", "libdnnl.so*"))):
            return root
    return None


def _cache_dir(key: str) -> str:
    base = os.environ.get("ALEARN_NATIVE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "alearn", "native")
    return os.path.join(base, key)


def _build(prefix: str) -> str:
    """Compiles dnnl_conv.cc (once per source/jaxlib/oneDNN) and returns the .so path."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++) on PATH")
    libdir = os.path.dirname(sorted(glob.glob(os.path.join(prefix, "lib*", "libdnnl.so*")))[0])
    with open(_SOURCE, "rb") as f:
        source = f.read()
    stamp = "|".join([hashlib.sha256(source).hexdigest(), jax.__version__, prefix,
                      *sorted(os.path.basename(p) for p in glob.glob(
                          os.path.join(libdir, "libdnnl.so*")))])
    out_dir = _cache_dir(hashlib.sha256(stamp.encode()).hexdigest()[:16])
    so = os.path.join(out_dir, "dnnl_conv.so")
    if os.path.exists(so):
        return so
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it
        if os.path.exists(so):
            return so
        tmp = f"{so}.{os.getpid()}.tmp"
        cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
               "-I", jax.ffi.include_dir(), "-I", os.path.join(prefix, "include"),
               _SOURCE, "-o", tmp, "-L", libdir, "-ldnnl", f"-Wl,-rpath,{libdir}"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"compiling {os.path.basename(_SOURCE)} failed: "
                               f"{res.stderr.strip()[-2000:]}")
        os.replace(tmp, so)
    return so


def _load() -> tuple[bool, str, int]:
    if not _enabled():
        return False, "ALEARN_NATIVE=0 turns the native convolutions off", 0
    if not (sys.platform.startswith("linux")):
        return False, f"the native convolutions are built on Linux only (this is {sys.platform})", 0
    prefix = _dnnl_prefix()
    if prefix is None:
        return False, f"oneDNN is not installed: {_INSTALL}", 0
    # oneDNN's OpenMP workers sleep between calls instead of spinning on the core XLA's own
    # threads need for the next ops (on the steps measured the effect was within noise:
    # docs/notes/perf.md). Read by libgomp when it loads, so set before; a user's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        lib = ctypes.CDLL(_build(prefix))
        for name in TARGETS:
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)),
                                        platform="cpu")
        version = int(lib.alearn_dnnl_version())
    except (OSError, RuntimeError, AttributeError) as e:
        return False, f"the native convolutions could not be built or loaded: {e}", 0
    return True, "", version


def _state() -> tuple[bool, str, int]:
    with _LOCK:
        if "ok" not in _STATE:
            _STATE["ok"], _STATE["why"], _STATE["version"] = _load()
        return _STATE["ok"], _STATE["why"], _STATE["version"]


def available() -> bool:
    """Whether the oneDNN custom calls are built, loaded and registered (builds on first call)."""
    return _state()[0]


def why_unavailable() -> str:
    """Why :func:`available` is False, naming the fix ("" when available)."""
    return _state()[1]


def dnnl_version() -> str:
    """oneDNN's version as "major.minor.patch" ("" when unavailable)."""
    v = _state()[2]
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v else ""
