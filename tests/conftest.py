"""Test configuration: 8 forced host CPU devices (set before JAX is imported).

XLA's CPU backend compiles at LLVM optimisation level 0: most of the suite's time is
compiling many small programs once each, and level 0 compiles them ~40 % faster
(docs/notes/models.md). HLO optimisation (fusion, layout, copy insertion) is unchanged, so
every oracle still checks the programs XLA builds; only the machine code is less tuned.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Convolutions: XLA's form everywhere, no per-shape autotuning (it would time every conv
# shape the suite compiles); tests/test_conv_impl.py covers the other forms and the autotuner.
os.environ.setdefault("ALEARN_CONV_IMPL", "xla")
