"""Training: optimizers and schedules, the jitted data-parallel step, the epoch loop.

Public API:
  create_optimizer, create_schedule, create_rule_optimizer, optimizer_from_config
  TrainState, create_train_state
  train_step, eval_step, make_train_step, make_eval_step
  data_mesh, shard_batch, prefetch_to_device, replicate, pad_batch
  train_and_evaluate, TrainingDivergedError, FAMILY_TRAINERS, validate_config, resolve_config
  ConfigError, CheckpointError, TrainingInterrupted (errors.py: what the binaries translate)
"""

from alearn.train.checkpoint import Checkpointer
from alearn.train.errors import CheckpointError, ConfigError, TrainingInterrupted
from alearn.train.loop import TrainingDivergedError, train_and_evaluate
from alearn.train.optim import (OPTIMIZERS, SCHEDULES, create_optimizer, create_rule_optimizer,
                                create_schedule, optimizer_from_config)
from alearn.train.report import MetricsWriter, plot_curves, write_results
from alearn.train.setup import FAMILY_TRAINERS, rule_names
from alearn.train.validate import resolve_config, validate_config
from alearn.train.sharding import (data_mesh, pad_batch, prefetch_to_device, replicate,
                                   shard_batch)
from alearn.train.state import TrainState, create_train_state, num_params
from alearn.train.step import eval_step, make_eval_step, make_train_step, train_step

__all__ = [
    "CheckpointError", "Checkpointer", "ConfigError", "FAMILY_TRAINERS", "MetricsWriter",
    "OPTIMIZERS", "SCHEDULES", "TrainState", "TrainingDivergedError", "TrainingInterrupted",
    "create_optimizer", "create_rule_optimizer",
    "create_schedule", "create_train_state", "data_mesh", "eval_step", "make_eval_step",
    "make_train_step", "num_params", "optimizer_from_config", "pad_batch", "plot_curves",
    "prefetch_to_device", "replicate", "resolve_config", "rule_names", "shard_batch",
    "train_and_evaluate", "train_step",
    "validate_config", "write_results",
]
