"""AL trainer and configs: results.json conventions, resume, SIGTERM, rule=al/bp on one model
name."""

import json
import os
import signal

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


class _SigtermAt:
    """Wraps a dataset: sends this process SIGTERM at the second train batch of ``epoch``,
    and counts the train batches it hands out."""

    def __init__(self, ds, epoch=None):
        self._ds, self._epoch, self.served = ds, epoch, 0
        self.info, self.num_batches = ds.info, ds.num_batches

    def batches(self, split, batch_size, *, epoch=0, **kw):
        for i, b in enumerate(self._ds.batches(split, batch_size, epoch=epoch, **kw)):
            if split == "train":
                self.served += 1
                if epoch == self._epoch and i == 1:
                    os.kill(os.getpid(), signal.SIGTERM)
            yield b


def _dataset():
    import alearn.data
    c = _config()
    return alearn.data.create(c.dataset, seed=0, **c.dataset_options)


def _history(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"} for line in f]


def test_al_sigterm_stops_at_a_clean_point_and_the_same_call_resumes(tmp_path):
    from alearn.train import Checkpointer, TrainingInterrupted, train_and_evaluate
    ref_dir, wd = str(tmp_path / "ref"), str(tmp_path / "run")
    given = _SigtermAt(_dataset())
    ref = train_and_evaluate(_config(epochs=3), ref_dir, dataset=given)
    assert given.served == 3 * 4  # the dataset passed in is the one trained on
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as err:
        train_and_evaluate(_config(epochs=3), wd, dataset=_SigtermAt(_dataset(), epoch=1))
    assert err.value.exit_code == 128 + signal.SIGTERM and err.value.last_epoch == 1
    assert signal.getsignal(signal.SIGTERM) is before
    assert Checkpointer(wd).latest_epoch() == 1
    res = train_and_evaluate(_config(epochs=3), wd, dataset=_dataset())
    assert res["resumed_from_epoch"] == 1
    assert res["test_accuracy"] == ref["test_accuracy"]
    assert _history(wd) == _history(ref_dir)
