"""alearn: neural-network training with learning rules beyond end-to-end backprop."""

from alearn import layers, models, rules, wrappers
from alearn._api import (cross_entropy, init, loss_and_updates, rule_updates, trainable,
                         value_and_updates)
from alearn.wrappers import (Wrapped, WrappedNNX, nnx_trainable, nnx_transform,
                         nnx_value_and_updates, wrap, wrap_nnx)
from alearn.wrappers import Feedback

__version__ = "0.1.0"

__all__ = [
    "cross_entropy", "init", "layers", "loss_and_updates", "models", "rule_updates",
    "rules", "trainable", "value_and_updates", "wrap", "Wrapped", "WrappedNNX",
    "nnx_trainable", "nnx_transform", "nnx_value_and_updates", "wrap_nnx", "Feedback", "wrappers",
]
