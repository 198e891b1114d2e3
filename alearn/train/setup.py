"""From a config to the objects of a run, failing early on bad names.

Config fields (see ``experiments/configs/default.py``): ``rule``, ``rule_hparams`` (dict),
``model``, ``model_kwargs`` (dict), ``dataset``, ``dataset_options`` (dict), ``data_dir``,
``optimizer``, ``schedule`` and the optimizer fields of :func:`alearn.train.create_optimizer`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import alearn
from alearn.train.errors import ConfigError
# FAMILY_TRAINERS, rule_names: defined with the checks that need them (re-exported).
from alearn.train.validate import (FAMILY_TRAINERS, resolve_config, rule_names,  # noqa: F401
                                   validate_config)


def _as_dict(value: Any) -> dict:
    if value is None:
        return {}
    return dict(value.to_dict() if hasattr(value, "to_dict") else value)


def family_trainer(rule: str) -> Callable[..., dict] | None:
    """The dedicated train function for rule family ``rule``, or None for the generic loop.

    It is called as ``fn(config, workdir, dataset=dataset)`` (``dataset`` None: from the
    config).
    """
    target = FAMILY_TRAINERS.get(str(rule).lower())
    if target is None:
        return None
    module_name, fn_name = target.split(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise NotImplementedError(
            f"rule {rule!r} is trained by {target}, which {module_name} does not define yet")
    return fn


def create_dataset(config: Any):
    """``alearn.data.create`` from the config's dataset fields."""
    import alearn.data
    try:
        return alearn.data.create(config.dataset, data_dir=config.get("data_dir", None) or None,
                                  seed=int(config.get("seed", 0)),
                                  **_as_dict(config.get("dataset_options", None)))
    except ValueError as e:  # unknown option or value: the user's config
        raise ConfigError(str(e)) from None


def steps_per_epoch(dataset: Any, batch_size: int) -> int:
    """Full training batches per epoch; a batch larger than the training split is the
    user's config error (:class:`ConfigError`), found right after the data is opened."""
    try:
        steps = dataset.num_batches("train", batch_size)
    except ValueError as e:
        raise ConfigError(f"config.batch_size={batch_size}: {e}") from None
    if steps < 1:
        raise ConfigError(f"config.batch_size={batch_size} exceeds the "
                          f"{dataset.info.num_train} training examples of "
                          f"{dataset.info.name!r}: an epoch would have no full batch")
    return steps


def create_model_and_rule(config: Any, num_classes: int):
    """``(model, rule)`` from ``config.model``/``model_kwargs`` and ``rule``/``rule_hparams``."""
    kwargs = _as_dict(config.get("model_kwargs", None))
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        model = alearn.models.create(config.model, num_classes, **kwargs)
    except TypeError as e:
        raise ConfigError(f"bad config.model_kwargs {kwargs} for model {config.model!r}: {e}") from e
    rule = alearn.rules.create(config.rule, **_as_dict(config.get("rule_hparams", None)))
    return model, rule


def step_hook_for(rule: Any, model: Any):
    """The rule's extra per-step pure function, if it has one.

    A rule that needs a phase besides its updates defines a method
    ``train_step_hook(model) -> hook`` with ``hook(state, batch, key) -> state``; the generic
    train step calls it after every optimizer update. Rules with a weight-mirror phase
    (a method ``mirror(params, feedback, key) -> feedback``, ASAP thesis eq. 2.6) get
    :func:`mirror_hook` without defining anything else.
    """
    factory = getattr(rule, "train_step_hook", None)
    if callable(factory):
        return factory(model)
    if callable(getattr(rule, "mirror", None)):
        return mirror_hook(rule)
    return None


def mirror_hook(rule: Any):
    """Runs ``rule.mirror`` on the feedback weights after every ``rule.mirror_every``-th step.

    Mirror mode (Akrout et al. 2019) alternates with ordinary training: after the optimizer
    step that brings ``state.step`` to a multiple of ``mirror_every``, B is updated from
    noise sent through the *updated* forward weights.
    """
    import jax  # pylint: disable=import-outside-toplevel

    every = int(getattr(rule, "mirror_every", 1))

    def hook(state, batch, key):
        del batch
        where = "trainable" if "feedback" in state.trainable else "fixed"
        tree = getattr(state, where)
        if "feedback" not in tree:
            return state
        params, feedback = state.trainable["params"], tree["feedback"]
        feedback = jax.lax.cond(state.step % every == 0,
                                lambda: rule.mirror(params, feedback, key), lambda: feedback)
        return state.replace(**{where: {**tree, "feedback": feedback}})

    return hook
