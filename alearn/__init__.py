"""alearn: neural-network training with learning rules beyond end-to-end backprop.

``models``, ``rules``, ``wrappers`` and ``nn`` are imported with the package; ``data``, ``analysis``,
``train`` and ``al`` are imported on first attribute access (``alearn.data.create(...)``
works after a bare ``import alearn``) so that ``import alearn`` does not pay for them.
"""

import importlib

from alearn import _malloc

_malloc.configure()  # before anything starts JAX's CPU backend: see alearn/_malloc.py

from alearn import models, nn, rules, wrappers
from alearn._api import (cross_entropy, init, loss_and_updates, rule_updates, trainable,
                         value_and_updates)
from alearn.wrappers import (Feedback, Wrapped, WrappedNNX, describe, nnx_trainable,
                             nnx_transform, nnx_value_and_updates, wrap, wrap_nnx)

__version__ = "0.1.0"

_LAZY = ("al", "analysis", "data", "train")

__all__ = [
    "Feedback", "Wrapped", "WrappedNNX", "al", "analysis", "cross_entropy", "data", "describe",
    "init",
    "loss_and_updates", "models", "nn", "nnx_trainable", "nnx_transform",
    "nnx_value_and_updates", "rule_updates", "rules", "train", "trainable", "value_and_updates",
    "wrap", "wrap_nnx", "wrappers",
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"alearn.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'alearn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
