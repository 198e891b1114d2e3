"""Wrappers that train unmodified Flax models (Linen and NNX) by any alearn rule."""

from alearn.wrappers._nnx_train import nnx_trainable, nnx_transform, nnx_value_and_updates
from alearn.wrappers.describe import Description, describe
from alearn.wrappers.linen import SUPPORTED, Wrapped, wrap
from alearn.wrappers.nnx import Feedback, WrappedNNX, wrap_nnx

__all__ = ["Description", "Feedback", "SUPPORTED", "Wrapped", "WrappedNNX", "describe",
           "nnx_trainable", "nnx_transform", "nnx_value_and_updates", "wrap", "wrap_nnx"]
