"""Wrappers that train unmodified Flax models (Linen and NNX) by any alearn rule."""

from alearn.wrappers.describe import Description, describe
from alearn.wrappers.linen import SUPPORTED, Wrapped, wrap
from alearn.wrappers.nnx import (Feedback, WrappedNNX, nnx_trainable, nnx_transform,
                             nnx_value_and_updates, wrap_nnx)

__all__ = ["Description", "Feedback", "SUPPORTED", "describe", "Wrapped", "WrappedNNX", "nnx_trainable", "nnx_transform",
           "nnx_value_and_updates", "wrap", "wrap_nnx"]
