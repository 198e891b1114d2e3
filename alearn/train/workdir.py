"""What a workdir already holds, decided before a run starts.

``<workdir>/config.json`` records the config of the run the workdir belongs to. On start:

- ``config.overwrite=True`` deletes the previous run's outputs (checkpoints, metrics,
  results, plots, TensorBoard events) and starts over;
- a *finished* run (``results.json`` for the same config and ``epochs``) is reported, not
  retrained: :func:`prepare` returns its results;
- a run with a different config (other than ``epochs`` and output-only fields) is refused
  with a :class:`~alearn.train.errors.ConfigError` listing the differences;
- otherwise the run starts, or resumes from its newest checkpoint (raising ``epochs``
  continues a finished run).
Only process 0 writes; every process reads.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
from absl import logging

from alearn.train.errors import ConfigError
from alearn.train.report import _jsonable, atomic_write_json

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
# Fields that change where or how a run reports, not what it computes.
OUTPUT_ONLY = ("progress_bar", "tensorboard", "checkpoint_keep", "overwrite", "distributed",
               "eval_batch_size", "data_dir")
_OUTPUTS = ("checkpoints", "corrupted_checkpoints", "tensorboard", "metrics.jsonl",
            RESULTS_FILE, CONFIG_FILE, "curves.png", "alignment.png")


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _config_dict(config: Any) -> dict:
    d = _jsonable(config.to_dict() if hasattr(config, "to_dict") else dict(config))
    return {k: v for k, v in d.items() if k not in OUTPUT_ONLY}


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def clear(workdir: str) -> None:
    """Deletes a previous run's outputs from ``workdir`` (process 0), keeping other files."""
    if jax.process_index() == 0:
        for name in _OUTPUTS:
            path = os.path.join(workdir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
        logging.warning("config.overwrite=True: removed the previous run's outputs in %s", workdir)
    _sync("alearn_workdir_clear")


def prepare(config: Any, workdir: str) -> dict | None:
    """Readies ``workdir`` for ``config``; returns the stored results of a finished run.

    Raises:
      ConfigError: the workdir holds a run with another config, or more epochs than asked.
    """
    os.makedirs(workdir, exist_ok=True)
    if config.get("overwrite", False):
        clear(workdir)
    new = _config_dict(config)
    old = _read(os.path.join(workdir, CONFIG_FILE))
    if old is not None:
        old = {k: v for k, v in old.items() if k not in OUTPUT_ONLY}
        diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                if k != "epochs" and old.get(k) != new.get(k)]
        if diff:
            raise ConfigError(
                f"workdir {workdir} holds a run with a different config ({'; '.join(diff)}); "
                "use a new --workdir, or pass --config.overwrite=True to replace that run")
        results = _read(os.path.join(workdir, RESULTS_FILE))
        done = results.get("epochs") if results else None
        if done is not None and int(done) == int(new.get("epochs", 0)):  # the caller says so
            return {**results, "already_finished": True}  # (experiments.train: one line)
        if done is not None and int(done) > int(new.get("epochs", 0)):
            raise ConfigError(
                f"workdir {workdir} holds a run finished after {done} epochs; "
                f"config.epochs={new.get('epochs')} is fewer. Use a new --workdir, or pass "
                "--config.overwrite=True to replace that run")
    if jax.process_index() == 0:
        atomic_write_json(os.path.join(workdir, CONFIG_FILE), new)
    _sync("alearn_workdir_prepare")
    return None
