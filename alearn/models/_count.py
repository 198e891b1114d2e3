"""Parameter counting."""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax


def num_params(variables_or_params: Any) -> int:
    """Number of scalars in the ``"params"`` collection.

    Accepts a variables dict (only its ``"params"`` collection is counted: feedback weights
    and batch statistics are not parameters of the model) or a params tree itself. Leaves
    may be arrays or ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``), so full-size models
    can be counted without allocating them.
    """
    tree = variables_or_params
    if isinstance(tree, Mapping) and "params" in tree:
        tree = tree["params"]
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))
