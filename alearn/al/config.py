"""From a config to the :class:`~alearn.al.network.ALNetwork` it describes (thesis Ch. 3).

The AL trainer's own hyperparameters (:data:`HPARAMS`, config field ``al_hparams``), its
optimizers and :func:`build`. Below both the trainer (:mod:`alearn.al.train`) and the
config checks (:mod:`alearn.train.validate`), which import it from here; the config fields
are listed in :mod:`alearn.al.train`.
"""

from __future__ import annotations

from typing import Any

import optax

from alearn.al import models
from alearn.al.network import ALNetwork
from alearn.train.optim import create_schedule, schedule_factor

HPARAMS = {"ae_lr_mult": 2.0, "assoc_trains_g": False, "assoc_reduction": "mean",
           "l2_scope": "f"}
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}


def _dict(value: Any) -> dict:
    if value is None:
        return {}
    return dict(value.to_dict() if hasattr(value, "to_dict") else value)


def build(config: Any, num_classes: int, input_shape: tuple[int, ...], steps_per_epoch: int
          ) -> ALNetwork:
    """The :class:`ALNetwork` a config describes (schedule and optimizers included)."""
    hp = {**HPARAMS, **_dict(config.get("al_hparams", None))}
    unknown = sorted(set(hp) - set(HPARAMS))
    if unknown:
        raise ValueError(f"unknown AL hyperparameter(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(sorted(HPARAMS))}")
    opt = str(config.get("optimizer", "adam")).lower()
    if opt not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt!r} for AL; choose one of: "
                         f"{', '.join(OPTIMIZERS)}")
    lr = create_schedule(config.get("schedule", "constant"), float(config.learning_rate),
                         steps_per_epoch=steps_per_epoch, epochs=int(config.epochs),
                         decay_epochs=tuple(config.get("decay_epochs", ()) or ()),
                         decay_factor=schedule_factor(config),
                         decay_fractions=tuple(config.get("decay_fractions", ()) or ()))
    kwargs = {k: v for k, v in _dict(config.get("model_kwargs", None)).items() if v}
    kwargs.pop("baseline", None)  # the BP twin's kind (ALBaseline), not an AL spec field
    wm = float(kwargs.pop("width_multiplier", 1.0))
    return models.create(config.model, num_classes, input_shape, width_multiplier=wm,
                         spec_overrides=kwargs, lr=lr, ae_lr_mult=float(hp["ae_lr_mult"]),
                         weight_decay=float(config.get("weight_decay", 0.0)),
                         assoc_trains_g=bool(hp["assoc_trains_g"]),
                         assoc_reduction=str(hp["assoc_reduction"]),
                         l2_scope=str(hp["l2_scope"]), optimizer=OPTIMIZERS[opt])
