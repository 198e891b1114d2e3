"""Training: optimizers and schedules, the jitted data-parallel step, the epoch loop.

Public API:
  create_optimizer, create_schedule, create_rule_optimizer, optimizer_from_config
  TrainState, create_train_state
  train_step, eval_step, make_train_step, make_eval_step
  data_mesh, shard_batch, prefetch_to_device, replicate, pad_batch
  train_and_evaluate, TrainingDivergedError, FAMILY_TRAINERS, validate_config
"""

from alearn.train.checkpoint import Checkpointer
from alearn.train.loop import TrainingDivergedError, train_and_evaluate
from alearn.train.optim import (OPTIMIZERS, SCHEDULES, create_optimizer, create_rule_optimizer,
                                create_schedule, optimizer_from_config)
from alearn.train.report import MetricsWriter, plot_curves, write_results
from alearn.train.setup import FAMILY_TRAINERS, rule_names, validate_config
from alearn.train.sharding import (data_mesh, pad_batch, prefetch_to_device, replicate,
                                   shard_batch)
from alearn.train.state import TrainState, create_train_state, num_params
from alearn.train.step import eval_step, make_eval_step, make_train_step, train_step

__all__ = [
    "Checkpointer", "FAMILY_TRAINERS", "MetricsWriter", "OPTIMIZERS", "SCHEDULES",
    "TrainState", "TrainingDivergedError", "create_optimizer", "create_rule_optimizer",
    "create_schedule", "create_train_state", "data_mesh", "eval_step", "make_eval_step",
    "make_train_step", "num_params", "optimizer_from_config", "pad_batch", "plot_curves",
    "prefetch_to_device", "replicate", "rule_names", "shard_batch", "train_and_evaluate", "train_step",
    "validate_config", "write_results",
]
