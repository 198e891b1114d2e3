"""The tiny config and data the trainer-loop tests share (test_train, test_train_robust)."""

import ml_collections

import alearn.data


def loop_config(**over) -> ml_collections.ConfigDict:
    """A 3-epoch BP MLP on a tiny synthetic set; ``over`` replaces or adds fields."""
    c = ml_collections.ConfigDict(dict(
        rule="bp", rule_hparams={}, model="mlp", model_kwargs={"widths": (16,)},
        dataset="synthetic", dataset_options={}, data_dir="", seed=0, epochs=3,
        batch_size=16, eval_batch_size=40, optimizer="sgd", learning_rate=0.05, momentum=0.9,
        nesterov=False, weight_decay=1e-4, schedule="cosine", decay_epochs=(), decay_factor=0.1,
        checkpoint_keep=5, tensorboard=True, progress_bar=False))
    c.update(over)
    return c


def synthetic_data():
    """4 classes of 4x4x1 images, 64 train / 50 test."""
    return alearn.data.create("synthetic", num_classes=4, image_shape=(4, 4, 1), num_train=64,
                              num_test=50, noise=0.5)
