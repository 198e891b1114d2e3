"""``TrainState``: everything a training run carries from one step to the next."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

import alearn
from alearn.rules.base import Rule

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """A pure pytree of training state.

    Attributes:
      step: number of optimizer steps taken (int32 scalar).
      trainable: ``alearn.trainable(rule, variables)`` = ``{"params", ["feedback"]}``, the
        tree the optimizer updates.
      fixed: the other variable collections: feedback weights a rule does not train,
        ``batch_stats`` (updated by the forward pass, not by the optimizer).
      opt_state: the optimizer state over ``trainable``.
      key: raw key data (uint32, ``jax.random.key_data``) of per-step randomness; a step
        hook gets ``fold_in(wrap_key_data(key), step)``. Raw data so checkpoints store it.
    """

    step: Array
    trainable: dict
    fixed: dict
    opt_state: Any
    key: Array

    def variables(self) -> dict:
        """The model's variables dict (all collections) for ``model.apply``."""
        return {**self.fixed, **self.trainable}


def create_train_state(model: Any, rule: Rule, optimizer: optax.GradientTransformation,
                       key: Array, sample_x: Array) -> TrainState:
    """Initialises the model for ``rule`` and the optimizer over its trainable tree.

    ``key`` is split into the initialisation key and the per-step key, so a run is a pure
    function of it.
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    init_key, step_key = jax.random.split(key)
    variables = alearn.init(model, rule, init_key, sample_x)
    trainable = alearn.trainable(rule, variables)
    fixed = {k: v for k, v in variables.items() if k not in trainable}
    return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable, fixed=fixed,
                      opt_state=optimizer.init(trainable),
                      key=jax.random.key_data(step_key))


def num_params(state: TrainState) -> int:
    """Number of scalars in the forward weights (the ``"params"`` collection)."""
    params = state.trainable.get("params", state.fixed.get("params", {}))
    return int(sum(x.size for x in jax.tree.leaves(params)))
