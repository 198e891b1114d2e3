"""Tiny run for the SIGKILL test (tests/_kill_harness.py): 12 epochs of 16 steps, MLP 16-16-4.

  python -m experiments.train --config=tests/_kill_config.py --workdir=/tmp/kill
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config("bp")
    c.model_kwargs = ml_collections.ConfigDict({"widths": (16,)})
    c.dataset = "synthetic"
    c.dataset_options = ml_collections.ConfigDict(dict(
        num_classes=4, image_shape=(4, 4, 1), num_train=256, num_test=64, noise=0.5))
    c.epochs = 12
    c.batch_size = 16
    c.eval_batch_size = 64
    c.optimizer = "sgd"
    c.learning_rate = 0.05
    c.schedule = "cosine"
    c.tensorboard = False
    c.progress_bar = False
    c.distributed = "off"
    return c
