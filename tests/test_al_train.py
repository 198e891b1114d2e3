"""AL trainer and configs: results.json conventions, resume, rule=al/bp on one model name."""

import json
import os

import pytest

from experiments.configs import al as al_configs


def _config(rule="al", epochs=2):
    c = al_configs.get_config("sigmoid_mlp,mnist5k,cpu")
    c.rule = rule
    c.dataset = "synthetic"
    c.dataset_options = {"num_classes": 4, "image_shape": (4, 4, 1), "num_train": 64,
                         "num_test": 32, "noise": 0.3}
    c.model_kwargs = {"width_multiplier": 1.0, "depth": 2, "width": 16, "layers_per_block": 1}
    c.epochs, c.batch_size, c.learning_rate = epochs, 16, 1e-2
    c.tensorboard, c.progress_bar, c.eval_train = False, False, False
    return c


def test_al_trainer_writes_results_and_resumes(tmp_path):
    from alearn.train import train_and_evaluate
    workdir = str(tmp_path / "al")
    res1 = train_and_evaluate(_config(epochs=1), workdir)
    res = train_and_evaluate(_config(epochs=2), workdir)  # resumes after epoch 1
    assert res1["resumed_from_epoch"] == 0 and res["resumed_from_epoch"] == 1
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved["rule"] == "al" and saved["steps"] == 8
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert saved["num_params"] == saved["effective_params"]
    assert saved["total_params"] == saved["effective_params"] + saved["affiliated_params"]
    assert saved["train_samples_per_second"] > 0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]


def test_configs_cover_the_thesis_tables_and_reject_bad_names():
    for model in al_configs.MODELS:
        for ds in al_configs.DATASETS:
            c = al_configs.get_config(f"{model},{ds}")
            assert c.model == f"al_{model}" and c.batch_size == 32 and c.epochs == 200
            # issue 17: the authors' code (tests/test_al_defaults.py checks the values)
            assert c.decay_fractions == (0.4, 0.6, 0.8, 0.9)
            cifar = ds.startswith("cifar")
            assert c.dataset_options.augment == ("crop_flip_contrast" if cifar else "none")
            assert c.learning_rate == 1e-4
    assert al_configs.get_config("vgg,cifar10").weight_decay == 1e-5
    assert al_configs.get_config("resnet20,cifar100").weight_decay == 1e-4
    assert al_configs.get_config("vgg,mnist").weight_decay == 0.0
    with pytest.raises(ValueError, match="unknown AL model 'lenet'; choose one of: mlp"):
        al_configs.get_config("lenet,mnist")
