"""Optimizers and learning-rate schedules used by the papers (optax).

- ASAP thesis Sec. 5.1: SGD, momentum 0.9, weight decay 5e-4, cosine annealing.
- Associated Learning thesis Ch. 3: Adam, learning rate reduced at epochs 80, 120, 160, 180.

The full optimizer a trainer applies to ``alearn.trainable(rule, variables)`` is
``optax.chain(rule.transform(), base)`` (:func:`create_rule_optimizer`). Weight decay of the
base optimizer touches the ``"params"`` subtree only; decay of feedback weights (KP's
lambda) belongs to the rule's transform.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import optax

from alearn.rules.base import Rule

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


def _params_only(tree: Any) -> Any:
    """Weight-decay mask: True on the ``"params"`` subtree, False elsewhere (feedback)."""
    if isinstance(tree, dict) and "params" in tree:
        return {k: jax.tree.map(lambda _, on=(k == "params"): on, v) for k, v in tree.items()}
    return jax.tree.map(lambda _: True, tree)


def create_schedule(schedule: str, learning_rate: float, *, steps_per_epoch: int,
                    epochs: int, decay_epochs: Sequence[int] = (),
                    decay_factor: float = 0.1) -> optax.Schedule:
    """A per-step learning-rate schedule.

    Args:
      schedule: ``"constant"``; ``"cosine"`` (cosine annealing to 0 over ``epochs``, ASAP
        Sec. 5.1); ``"step"`` (multiply by ``decay_factor`` at each epoch in
        ``decay_epochs``, AL thesis Ch. 3: 80, 120, 160, 180).
      learning_rate: the initial rate.
      steps_per_epoch: optimizer steps in one epoch (converts epochs to steps).
      epochs: total epochs (cosine horizon).
      decay_epochs: epoch boundaries of the step schedule.
      decay_factor: multiplier applied at each boundary.

    Raises:
      ValueError: unknown schedule name (lists the valid ones) or bad sizes.
    """
    name = str(schedule).lower()
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"steps_per_epoch ({steps_per_epoch}) and epochs ({epochs}) must be >= 1")
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, decay_steps=epochs * steps_per_epoch)
    boundaries = {int(e) * steps_per_epoch: float(decay_factor) for e in sorted(decay_epochs)}
    return optax.piecewise_constant_schedule(learning_rate, boundaries)


def create_optimizer(optimizer: str = "sgd", learning_rate: float = 0.1, *,
                     schedule: str = "constant", steps_per_epoch: int = 1, epochs: int = 1,
                     momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                     decay_epochs: Sequence[int] = (), decay_factor: float = 0.1,
                     b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                     ) -> optax.GradientTransformation:
    """The base optimizer of the papers, with its schedule.

    Args:
      optimizer: ``"sgd"`` (momentum 0 = plain SGD; ASAP uses momentum 0.9),
        ``"adam"`` (L2 weight decay added to the gradient, as torch's Adam) or
        ``"adamw"`` (decoupled weight decay).
      learning_rate: initial learning rate.
      schedule: see :func:`create_schedule`.
      steps_per_epoch, epochs, decay_epochs, decay_factor: schedule arguments.
      momentum, nesterov: SGD momentum (heavy ball unless ``nesterov``).
      weight_decay: coefficient; for sgd/adam it is added to the update of the ``"params"``
        subtree before the optimizer (``g + wd * w``, ASAP's ``λW``), for adamw decoupled.
      b1, b2, eps: Adam moments.

    Raises:
      ValueError: unknown optimizer or schedule name (lists the valid ones).
    """
    name = str(optimizer).lower()
    if name not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    lr = create_schedule(schedule, learning_rate, steps_per_epoch=steps_per_epoch,
                         epochs=epochs, decay_epochs=decay_epochs, decay_factor=decay_factor)
    if name == "adamw":
        return optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                           mask=_params_only)
    if name == "adam":
        base = optax.adam(lr, b1=b1, b2=b2, eps=eps)
    else:
        base = optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)
    if weight_decay:
        return optax.chain(optax.add_decayed_weights(weight_decay, mask=_params_only), base)
    return base


def create_rule_optimizer(rule: Rule, base: optax.GradientTransformation
                          ) -> optax.GradientTransformation:
    """``optax.chain(rule.transform(), base)``: the optimizer over ``alearn.trainable``."""
    return optax.chain(rule.transform(), base)


def optimizer_from_config(config: Any, rule: Rule, steps_per_epoch: int
                          ) -> optax.GradientTransformation:
    """Builds the full optimizer from a config (fields as in experiments/configs/default.py)."""
    get: Callable[[str, Any], Any] = lambda k, d: config.get(k, d)  # noqa: E731
    base = create_optimizer(
        get("optimizer", "sgd"), get("learning_rate", 0.1),
        schedule=get("schedule", "constant"), steps_per_epoch=steps_per_epoch,
        epochs=get("epochs", 1), momentum=get("momentum", 0.0),
        nesterov=get("nesterov", False), weight_decay=get("weight_decay", 0.0),
        decay_epochs=tuple(get("decay_epochs", ()) or ()),
        decay_factor=get("decay_factor", 0.1))
    return create_rule_optimizer(rule, base)
