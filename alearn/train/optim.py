"""Optimizers and learning-rate schedules used by the papers (optax).

- ASAP thesis Sec. 5.1: SGD, momentum 0.9, weight decay 5e-4, cosine annealing.
- Associated Learning thesis Ch. 3: Adam, learning rate reduced at epochs 80, 120, 160, 180.

The full optimizer a trainer applies to ``alearn.trainable(rule, variables)`` is
``optax.chain(rule.transform(), base)`` (:func:`create_rule_optimizer`). Weight decay of the
base optimizer touches the ``"params"`` subtree by default (kernels, biases and BatchNorm,
as the ASAP authors' SGD does to the forward net); decay of feedback weights (KP's lambda)
belongs to the rule's transform unless ``weight_decay_mask="all"``.
:func:`check_rule_weight_decay` rejects combinations that decay a weight twice.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import optax

from alearn.rules.base import Rule
from alearn.train.decay import WEIGHT_DECAY_MASKS, decay_mask  # noqa: F401 (re-exported)
from alearn.train.kp_sgd import kp_sgd, unfusable_reason

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


def create_schedule(schedule: str, learning_rate: float, *, steps_per_epoch: int,
                    epochs: int, decay_epochs: Sequence[int] = (),
                    decay_factor: float | Sequence[float] = 0.1,
                    decay_fractions: Sequence[float] = ()) -> optax.Schedule:
    """A per-step learning-rate schedule.

    Args:
      schedule: ``"constant"``; ``"cosine"`` (cosine annealing to 0 over ``epochs``, ASAP
        Sec. 5.1); ``"step"`` (multiply by ``decay_factor`` at each epoch in
        ``decay_epochs``, AL thesis Ch. 3: 80, 120, 160, 180).
      learning_rate: the initial rate.
      steps_per_epoch: optimizer steps in one epoch (converts epochs to steps).
      epochs: total epochs (cosine horizon).
      decay_epochs: epoch boundaries of the step schedule.
      decay_factor: multiplier applied at each boundary, or one multiplier per boundary
        (the AL authors' code: 0.1, 0.1, 0.1, 0.5).
      decay_fractions: boundaries as fractions of all ``epochs * steps_per_epoch`` steps
        (the AL code: 0.4, 0.6, 0.8, 0.9, i.e. epochs 80/120/160/180 of 200); when given,
        ``decay_epochs`` is ignored.

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
    total = epochs * steps_per_epoch
    steps = ([int(round(float(f) * total)) for f in decay_fractions] if decay_fractions
             else [int(e) * steps_per_epoch for e in decay_epochs])
    if any(f < 0 or f > 1 for f in map(float, decay_fractions)):
        raise ValueError(f"decay_fractions must lie in [0, 1], got {tuple(decay_fractions)}")
    factors = ([float(decay_factor)] * len(steps) if isinstance(decay_factor, (int, float))
               else [float(f) for f in decay_factor])
    if len(factors) != len(steps):
        raise ValueError(f"{len(factors)} decay factors {tuple(factors)} for {len(steps)} "
                         f"boundaries; give one factor or one per boundary")
    boundaries: dict[int, float] = {}
    for step, factor in sorted(zip(steps, factors)):  # equal boundaries multiply
        boundaries[step] = boundaries.get(step, 1.0) * factor
    return optax.piecewise_constant_schedule(learning_rate, boundaries)


def create_optimizer(optimizer: str = "sgd", learning_rate: float = 0.1, *,
                     schedule: str = "constant", steps_per_epoch: int = 1, epochs: int = 1,
                     momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                     weight_decay_mask: str = "params", decay_epochs: Sequence[int] = (),
                     decay_factor: float | Sequence[float] = 0.1,
                     decay_fractions: Sequence[float] = (),
                     b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                     ) -> optax.GradientTransformation:
    """The base optimizer of the papers, with its schedule.

    Args:
      optimizer: ``"sgd"`` (momentum 0 = plain SGD; ASAP uses momentum 0.9),
        ``"adam"`` (L2 weight decay added to the gradient, as torch's Adam) or
        ``"adamw"`` (decoupled weight decay).
      learning_rate: initial learning rate.
      schedule: see :func:`create_schedule`.
      steps_per_epoch, epochs, decay_epochs, decay_factor, decay_fractions: schedule
        arguments.
      momentum, nesterov: SGD momentum (heavy ball unless ``nesterov``).
      weight_decay: coefficient; for sgd/adam it is added to the update before the
        optimizer (``g + wd * w``, ASAP's ``λW``, torch SGD's ``weight_decay``), for adamw
        decoupled.
      weight_decay_mask: which leaves decay: "params" (every forward parameter incl. biases
        and BatchNorm, default), "kernels", "conv_kernels", or "all" (also trained feedback
        weights, as the ASAP authors' SGD); see ``WEIGHT_DECAY_MASKS``.
      b1, b2, eps: Adam moments.

    Raises:
      ValueError: unknown optimizer, schedule or mask name (lists the valid ones).
    """
    name = str(optimizer).lower()
    if name not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    mask = decay_mask(weight_decay_mask)
    lr = create_schedule(schedule, learning_rate, steps_per_epoch=steps_per_epoch,
                         epochs=epochs, decay_epochs=decay_epochs, decay_factor=decay_factor,
                         decay_fractions=decay_fractions)
    if name == "adamw":
        return optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
    if name == "adam":
        base = optax.adam(lr, b1=b1, b2=b2, eps=eps)
    else:
        base = optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)
    if weight_decay:
        return optax.chain(optax.add_decayed_weights(weight_decay, mask=mask), base)
    return base


def create_rule_optimizer(rule: Rule, base: optax.GradientTransformation
                          ) -> optax.GradientTransformation:
    """``optax.chain(rule.transform(), base)``: the optimizer over ``alearn.trainable``.

    A rule whose correctness depends on the base optimizer (KP: W and B must decay by one
    factor) defines ``check_optimizer(tx, params)``; it runs once in ``init`` on the concrete
    parameters, whatever optax transformation ``base`` is (skipped when ``init`` is traced).
    The state is the chain's own, so checkpoints are unchanged.

    Raises:
      ValueError: at ``init``, from the rule's check (KP: ``base`` decays W twice, W but not
        B, or rescales the decay as Adam's L2 does), naming how to pair the decay.
    """
    tx = optax.chain(rule.transform(), base)
    check = getattr(rule, "check_optimizer", None)
    if not callable(check):
        return tx

    def init_fn(params):
        check(tx, params)
        return tx.init(params)

    return optax.GradientTransformation(init_fn, tx.update)


def check_rule_weight_decay(rule: Rule, weight_decay: float, weight_decay_mask: str = "params",
                            optimizer: str = "sgd") -> None:
    """Rejects a base weight decay that the rule's own decay would duplicate or unbalance.

    Rules that decay weights themselves define ``check_base_weight_decay(weight_decay,
    weight_decay_mask, optimizer)`` (KP: W and B must decay by one factor; mask- and
    optimizer-aware, :func:`alearn.rules.kp.decay_problem`); others pass.

    Raises:
      ValueError: from the rule, explaining the combination and the config flags that fix it.
    """
    check = getattr(rule, "check_base_weight_decay", None)
    if callable(check):
        decay_mask(weight_decay_mask)  # a bad mask name fails with the valid list first
        check(float(weight_decay), str(weight_decay_mask).lower(), str(optimizer).lower())


def schedule_factor(config: Any) -> float | tuple[float, ...]:
    """``config.decay_factors`` (one per boundary) when set, else ``config.decay_factor``."""
    factors = tuple(config.get("decay_factors", ()) or ())
    return factors if factors else float(config.get("decay_factor", 0.1))


def optimizer_from_config(config: Any, rule: Rule, steps_per_epoch: int, *,
                          kp_fused: bool | None = None) -> optax.GradientTransformation:
    """Builds the full optimizer from a config (fields as in experiments/configs/default.py).

    KP with SGD runs in its one-pass form (:func:`alearn.train.kp_sgd.kp_sgd`: B without a
    momentum buffer, equal to the separate form up to float32 rounding) where that form is
    exact; ``kp_fused=False`` (or ``$ALEARN_KP_FUSED=0`` when ``kp_fused`` is None) keeps
    the separate form ``optax.chain(rule.transform(), base)``, e.g. to resume a KP + SGD
    run checkpointed before the one-pass form existed (its optimizer state differs).

    Raises:
      ValueError: bad names, or a weight decay the rule would apply twice
        (:func:`check_rule_weight_decay`).
    """
    get: Callable[[str, Any], Any] = lambda k, d: config.get(k, d)  # noqa: E731
    mask = get("weight_decay_mask", "params")
    check_rule_weight_decay(rule, get("weight_decay", 0.0), mask, get("optimizer", "sgd"))
    fused = (_kp_fused_from_config(config, rule, steps_per_epoch) if _kp_fused(kp_fused)
             else None)
    if fused is not None:
        return fused
    base = create_optimizer(
        get("optimizer", "sgd"), get("learning_rate", 0.1),
        schedule=get("schedule", "constant"), steps_per_epoch=steps_per_epoch,
        epochs=get("epochs", 1), momentum=get("momentum", 0.0),
        nesterov=get("nesterov", False), weight_decay=get("weight_decay", 0.0),
        weight_decay_mask=mask, decay_epochs=tuple(get("decay_epochs", ()) or ()),
        decay_factor=schedule_factor(config),
        decay_fractions=tuple(get("decay_fractions", ()) or ()))
    return create_rule_optimizer(rule, base)


def _kp_fused(kp_fused: bool | None) -> bool:
    """``kp_fused``, or ``$ALEARN_KP_FUSED`` ("1" default, "0") when it is None."""
    if kp_fused is not None:
        return bool(kp_fused)
    value = os.environ.get("ALEARN_KP_FUSED", "1")
    if value not in ("0", "1"):
        raise ValueError(f"ALEARN_KP_FUSED={value!r}; choose 1 (KP's one-pass SGD, default) "
                         "or 0 (the separate form)")
    return value == "1"


def _kp_fused_from_config(config: Any, rule: Rule, steps_per_epoch: int
                          ) -> optax.GradientTransformation | None:
    """KP's one-pass SGD (:func:`alearn.train.kp_sgd.kp_sgd`) when the config allows it
    exactly (``unfusable_reason``); None otherwise (the separate form)."""
    get = config.get
    if str(get("optimizer", "sgd")).lower() != "sgd":
        return None
    kwargs = dict(momentum=float(get("momentum", 0.0) or 0.0),
                  weight_decay=get("weight_decay", 0.0),
                  weight_decay_mask=get("weight_decay_mask", "params"))
    if unfusable_reason(rule, weight_decay=kwargs["weight_decay"],
                        weight_decay_mask=kwargs["weight_decay_mask"]) is not None:
        return None
    lr = create_schedule(get("schedule", "constant"), get("learning_rate", 0.1),
                         steps_per_epoch=steps_per_epoch, epochs=get("epochs", 1),
                         decay_epochs=tuple(get("decay_epochs", ()) or ()),
                         decay_factor=schedule_factor(config),
                         decay_fractions=tuple(get("decay_fractions", ()) or ()))
    return kp_sgd(rule, lr, nesterov=bool(get("nesterov", False)), **kwargs)
