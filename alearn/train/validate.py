"""Every check a config can fail, run before any data is read or anything is compiled.

:func:`validate_config` raises :class:`~alearn.train.errors.ConfigError` (a ``ValueError``)
naming the bad field, its value and what is accepted. :func:`resolve_config` maps the
natural spelling ``rule="al", model="mlp"`` to the AL model ``al_mlp``.
"""

from __future__ import annotations

import math
import os
from types import MappingProxyType
from typing import Any

import alearn
from alearn.train.errors import ConfigError
from alearn.train.optim import (OPTIMIZERS, SCHEDULES, WEIGHT_DECAY_MASKS,
                                check_rule_weight_decay)

# Rule families trained by their own loop instead of the generic rule-pluggable one:
# config.rule -> "module:function" with the signature train_and_evaluate(config, workdir).
# Associated Learning (per-block losses and optimizers) lives in alearn.al.
FAMILY_TRAINERS = MappingProxyType({
    "al": "alearn.al:train_and_evaluate",
})
_AL_OPTIMIZERS = ("adam", "sgd")
DISTRIBUTED = ("auto", "off")
# model_kwargs fields that are layer sizes: every number in them must be a positive integer.
_SIZE_WORDS = ("width", "feature", "channel", "units", "depth", "filters", "hidden")


def _as_dict(value: Any) -> dict:
    if value is None:
        return {}
    return dict(value.to_dict() if hasattr(value, "to_dict") else value)


def rule_names() -> list[str]:
    """Every valid ``config.rule``: the rule registry plus the family trainers."""
    return sorted(set(alearn.rules.names()) | set(FAMILY_TRAINERS))


def _choice(field: str, value: Any, valid) -> str:
    valid = list(valid)
    if str(value).lower() not in valid:
        raise ConfigError(f"unknown {field} {value!r}; choose one of: {', '.join(valid)}")
    return str(value).lower()


def _number(config: Any, field: str, default: Any, *, low: float, strict: bool,
            integer: bool = False, high: float | None = None) -> Any:
    value = config.get(field, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        ok = ok and float(value).is_integer()
    ok = ok and math.isfinite(value) and (value > low if strict else value >= low)
    ok = ok and (high is None or value <= high)
    if not ok:
        rel = ">" if strict else ">="
        kind = "an integer" if integer else "a finite number"
        rng = f"{rel} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise ConfigError(f"config.{field}={value!r} must be {kind} {rng}")
    return value


def _al_model(config: Any) -> str | None:
    """The AL model name ``config`` means, or None when it is not an AL model name."""
    from alearn.al import models as al_models
    name = str(config.model).lower()
    if name in al_models.SPECS:
        return name
    if f"al_{name}" in al_models.SPECS:
        return f"al_{name}"
    return None


def _al_model_kwargs(name: str, kwargs: dict) -> dict:
    """``model_kwargs`` of a generic model translated for AL model ``name``."""
    kwargs = dict(kwargs)
    baseline = kwargs.pop("baseline", None)  # the BP twin's kind; the AL network ignores it
    if baseline is not None:
        _choice("model_kwargs.baseline", baseline, ("matched", "authors"))
    widths = kwargs.pop("widths", None)
    if widths is not None:
        widths = tuple(widths)
        if name != "al_mlp" or len(widths) != 2 or widths[0] != widths[1]:
            raise ConfigError(
                f"model_kwargs.widths={widths} does not describe AL model {name!r}: the AL MLP "
                "has 2 blocks of one width, so give widths=(w, w); other AL models take "
                "width_multiplier (see --config=experiments/configs/al.py:<model>,<dataset>)")
        kwargs["width"] = widths[0]
    return kwargs


def resolve_config(config: Any) -> Any:
    """``config`` with ``rule="al", model="<m>"`` mapped to the AL model ``al_<m>``.

    The default config's MLP ``widths=(w, w)`` becomes the AL MLP's ``width=w``. Returns
    ``config`` itself when nothing changes (a copy otherwise).
    """
    if str(config.get("rule", "")).lower() != "al":
        return config
    name = _al_model(config)
    kwargs = _as_dict(config.get("model_kwargs", None))
    if name is None or (name == str(config.model).lower() and "widths" not in kwargs):
        return config
    import ml_collections  # pylint: disable=import-outside-toplevel
    out = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict") else config)
    out.model = name
    out.model_kwargs = ml_collections.ConfigDict(_al_model_kwargs(name, kwargs))
    return out


def _check_sizes(kwargs: dict, model: str) -> None:
    for key, value in kwargs.items():
        if not any(w in key.lower() for w in _SIZE_WORDS):
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        multiplier = "multiplier" in key.lower()
        for v in values:
            bad = (isinstance(v, bool) or not isinstance(v, (int, float))
                   or not math.isfinite(v) or v <= 0
                   or (not multiplier and not float(v).is_integer()))
            if bad:
                what = "positive numbers" if multiplier else "positive integers"
                raise ConfigError(f"config.model_kwargs.{key}={value!r} for model {model!r}: "
                                  f"layer sizes must be {what}")


def _check_schedule(config: Any, epochs: int) -> None:
    schedule = _choice("schedule", config.get("schedule", "constant"), SCHEDULES)
    if schedule != "step":
        return
    if config.get("decay_fractions", ()):  # boundaries as fractions of the run's steps
        fractions = [float(f) for f in config.decay_fractions]
        if any(not 0 <= f <= 1 for f in fractions) or fractions != sorted(fractions):
            raise ConfigError(f"config.decay_fractions={tuple(fractions)} must be increasing "
                              "fractions in [0, 1]")
        factors = tuple(config.get("decay_factors", ()) or ())
        if factors and len(factors) != len(fractions):
            raise ConfigError(f"config.decay_factors={factors} needs one factor per decay "
                              f"fraction {tuple(fractions)}")
        return
    decay = [int(e) if isinstance(e, (int, float)) and float(e).is_integer() else e
             for e in (config.get("decay_epochs", ()) or ())]
    if not decay or any(not isinstance(e, int) or e < 1 for e in decay) or decay != sorted(decay):
        raise ConfigError(f"config.decay_epochs={tuple(decay)} must be increasing epochs >= 1 "
                          "for schedule='step'")
    _number(config, "decay_factor", 0.1, low=0.0, strict=True)
    if decay[0] > epochs:
        from absl import logging  # pylint: disable=import-outside-toplevel
        logging.warning("config.decay_epochs=%s: the first decay is after the last epoch (%d); "
                        "the step schedule stays constant in this run", tuple(decay), epochs)


def _check_data(config: Any) -> None:
    from alearn.data import specs, tfds_source, tiny_imagenet  # cheap: no TFDS import
    name = _choice("dataset", config.dataset, _data_names())
    data_dir = config.get("data_dir", "") or ""
    if data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
        raise ConfigError(f"config.data_dir={data_dir!r} is not a directory; give the directory "
                          "holding prepared datasets, or '' for the default location")
    spec = specs.SPECS[name]
    root = tfds_source.resolve_data_dir(data_dir or None)
    if spec.kind in specs.TFDS_KINDS:  # images and text
        try:
            tfds_source.check_prepared(spec.name, spec.tfds_name, root, spec.build_extras)
        except tfds_source.DatasetNotFoundError as e:
            raise ConfigError(str(e)) from None
    elif spec.kind == "tiny_imagenet":
        missing = [f for f in tiny_imagenet.FILES if not (root / tiny_imagenet.DIRNAME / f).is_file()]
        if missing:
            raise ConfigError(f"dataset 'tiny_imagenet' is not prepared under data_dir {root} "
                              f"(missing {', '.join(missing)}). Run:\n  "
                              f"{tiny_imagenet.prepare_command(root)}")
    return spec


def _data_names() -> list[str]:
    import alearn.data  # pylint: disable=import-outside-toplevel
    return list(alearn.data.names())


def _check_al(config: Any, num_classes: int) -> None:
    from alearn.al import models as al_models
    from alearn.al.pipeline import group_blocks
    name = _al_model(config)
    if name is None:
        raise ConfigError(f"unknown AL model {config.model!r}; choose one of: "
                          f"{', '.join(sorted(al_models.SPECS))} (or the same without 'al_')")
    _choice("optimizer", config.get("optimizer", "adam"), _AL_OPTIMIZERS)
    from alearn.al.config import HPARAMS as al_hparams  # the AL trainer's own list
    unknown = sorted(set(_as_dict(config.get("al_hparams", None))) - set(al_hparams))
    if unknown:
        raise ConfigError(f"unknown AL hyperparameter(s) {', '.join(unknown)}; valid: "
                          f"{', '.join(al_hparams)}")
    kwargs = _al_model_kwargs(name, _as_dict(config.get("model_kwargs", None)))
    _check_sizes(kwargs, name)
    wm = float(kwargs.pop("width_multiplier", 1.0) or 1.0)
    try:
        sp = al_models.spec(name, width_multiplier=wm, **{k: v for k, v in kwargs.items() if v})
    except TypeError as e:
        raise ConfigError(f"bad config.model_kwargs {kwargs} for AL model {name!r}: {e}") from None
    stages = int(config.get("pipeline_stages", 0) or 0)
    if stages:
        import jax  # pylint: disable=import-outside-toplevel
        blocks = [f"block{i + 1}" for i in range(len(sp.f_layers))]
        bps = config.get("pipeline_blocks_per_stage", None)
        if isinstance(bps, str):  # a balanced plan, costed when the pipeline is built
            _choice("pipeline_blocks_per_stage", bps, ("flops", "time"))
        else:
            group_blocks(blocks, stages, tuple(bps) if bps else None)
        _choice("pipeline_mode", config.get("pipeline_mode", "auto"), ("auto", "mpmd", "spmd"))
        data = int(config.get("pipeline_data", 1) or 1)
        if stages < 0 or data < 1 or stages * data > jax.device_count():
            raise ConfigError(
                f"config.pipeline_stages={stages} x pipeline_data={data} needs {stages * data} "
                f"devices, but {jax.device_count()} are available; on CPU set XLA_FLAGS="
                f"--xla_force_host_platform_device_count={stages * data} before the run")


def validate_config(config: Any) -> None:
    """Checks names, numbers, data and rule / model / pipeline settings of ``config``.

    Nothing is read or compiled. Raises:
      ConfigError: naming the bad value and listing the valid ones.
    """
    try:
        _validate(resolve_config(config))
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # from the rule / model / AL constructors
        raise ConfigError(str(e)) from None


def _validate(config: Any) -> None:
    rule = _choice("rule", config.rule, rule_names())
    spec = _check_data(config)
    epochs = _number(config, "epochs", 1, low=1, strict=False, integer=True)
    for field, default in (("batch_size", 1), ("eval_batch_size", 1000), ("checkpoint_keep", 3)):
        _number(config, field, default, low=1, strict=False, integer=True)
    _number(config, "learning_rate", 1e-3, low=0.0, strict=True)
    _number(config, "weight_decay", 0.0, low=0.0, strict=False)
    _number(config, "momentum", 0.0, low=0.0, strict=False, high=1.0)
    _check_schedule(config, int(epochs))
    _choice("distributed", config.get("distributed", "auto"), DISTRIBUTED)
    if rule == "al":
        _check_al(config, spec.num_classes)
    if rule in FAMILY_TRAINERS:  # their trainers check their own fields
        return
    _choice("optimizer", config.get("optimizer", "adam"), OPTIMIZERS)
    model = _choice("model", config.model, alearn.models.names())
    kwargs = _as_dict(config.get("model_kwargs", None))
    _check_sizes(kwargs, model)
    alearn.models.create(model, spec.num_classes, **kwargs)  # unknown fields; builds no arrays
    rule_obj = alearn.rules.create(rule, **_as_dict(config.get("rule_hparams", None)))
    _choice("weight_decay_mask", config.get("weight_decay_mask", "params"), WEIGHT_DECAY_MASKS)
    check_rule_weight_decay(rule_obj, config.get("weight_decay", 0.0),
                            config.get("weight_decay_mask", "params"),
                            config.get("optimizer", "adam"))
