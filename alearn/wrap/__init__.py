"""Wrappers that train unmodified Flax models (Linen and NNX) by any alearn rule."""

from alearn.wrap.linen import SUPPORTED, Wrapped, wrap

__all__ = ["SUPPORTED", "Wrapped", "wrap"]
