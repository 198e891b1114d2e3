"""alearn: neural-network training with learning rules beyond end-to-end backprop."""

from alearn import layers, models, rules
from alearn._api import (cross_entropy, init, loss_and_updates, rule_updates, trainable,
                         value_and_updates)
from alearn.wrap import Wrapped, wrap

__version__ = "0.1.0"

__all__ = [
    "cross_entropy", "init", "layers", "loss_and_updates", "models", "rule_updates",
    "rules", "trainable", "value_and_updates", "wrap", "Wrapped",
]
