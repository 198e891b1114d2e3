"""Quickstart: MLP 784-1024-1024-10 trained with backprop on the bundled mnist5k digits.

Command:
  python -m experiments.train --config=experiments/configs/default.py --workdir=/tmp/quickstart

Runtime here: TBD s on 2 CPU cores. Expected: test accuracy TBD (>= 0.90) on the 1,000
held-out mnist5k digits.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The default (quickstart) configuration; every field can be overridden by flag."""
    c = ml_collections.ConfigDict()
    # What to train.
    c.rule = "bp"
    c.rule_hparams = ml_collections.ConfigDict()
    c.model = "mlp"
    c.model_kwargs = ml_collections.ConfigDict({"widths": (1024, 1024)})
    c.dataset = "mnist5k"
    c.dataset_options = ml_collections.ConfigDict()
    c.data_dir = ""  # "" = alearn.data's default location
    c.seed = 0
    # How to train.
    c.epochs = 10
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.optimizer = "adam"  # adam | adamw | sgd
    c.learning_rate = 1e-3
    c.momentum = 0.9  # sgd only
    c.nesterov = False
    c.weight_decay = 0.0  # on "params" only
    c.schedule = "constant"  # constant | cosine | step
    c.decay_epochs = (80, 120, 160, 180)  # step schedule only
    c.decay_factor = 0.1
    # Outputs.
    c.checkpoint_keep = 3
    c.tensorboard = True
    c.progress_bar = True
    return c
