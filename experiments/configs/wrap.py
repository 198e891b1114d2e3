"""A plain Flax model (the Flax examples' MNIST CNN) trained by any rule via ``alearn.wrap``.

Command:
  python -m experiments.train --config=experiments/configs/wrap.py:dfa --workdir=/tmp/wrap_dfa

``model=flax_cnn`` is ``alearn.wrap(alearn.models.FlaxCNN(...))``, an unmodified
``flax.linen`` module (``--config.model_kwargs.hidden=128`` etc. set its fields). Figures
(runtime, accuracy) are in docs/notes/wrap.md.
"""

import ml_collections

from experiments.configs import default


def get_config(rule: str = "dfa") -> ml_collections.ConfigDict:
    """``default.get_config(rule)`` with the plain Flax CNN and 3 epochs."""
    c = default.get_config(rule)
    c.model = "flax_cnn"
    c.model_kwargs = ml_collections.ConfigDict({"features": (32, 64), "hidden": 256})
    c.epochs = 3
    return c
