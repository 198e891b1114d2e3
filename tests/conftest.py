"""Test configuration: 8 forced host CPU devices (set before JAX is imported)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Convolutions: XLA's form everywhere, no per-shape autotuning (it would time every conv
# shape the suite compiles); tests/test_conv_impl.py covers the im2col form and the autotuner.
os.environ.setdefault("ALEARN_CONV_IMPL", "xla")
