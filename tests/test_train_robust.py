"""Robustness of a run: unreadable checkpoints, finished runs, changed configs, SIGTERM,
and validation of every config field before anything is read or compiled."""

import json
import os
import signal

import ml_collections
import pytest
from absl import logging

from alearn import train
from alearn.train import validate
from _train_fixtures import loop_config, synthetic_data


def _config(**over):
    return loop_config(**{"weight_decay": 0.0, "tensorboard": False, "overwrite": False,
                          "distributed": "off", **over})


_data = synthetic_data


def _history(wd):
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(l).items() if k != "epoch_time_s"} for l in f]


def _damage(wd, epoch):
    with open(os.path.join(wd, "checkpoints", str(epoch), "default", "_METADATA"), "w") as f:
        f.write("{not json")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("ref"))
    return wd, train.train_and_evaluate(_config(), wd, dataset=_data())


def test_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, reference, monkeypatch):
    ref_dir, ref = reference
    wd = str(tmp_path)
    train.train_and_evaluate(_config(), wd, dataset=_data())
    _damage(wd, 3)
    os.remove(os.path.join(wd, "results.json"))  # as if killed before the end
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
    res = train.train_and_evaluate(_config(), wd, dataset=_data())
    assert res["resumed_from_epoch"] == 2
    assert any(os.path.join(wd, "checkpoints", "3") in w and "cannot be read" in w
               for w in warnings), warnings
    moved = os.listdir(os.path.join(wd, "corrupted_checkpoints"))
    assert len(moved) == 1 and moved[0].startswith("3-")
    assert res["test_accuracy"] == ref["test_accuracy"] and res["steps"] == ref["steps"]
    assert _history(wd) == _history(ref_dir)


def test_no_readable_checkpoint_names_directory_and_choices(tmp_path):
    wd = str(tmp_path)
    train.train_and_evaluate(_config(epochs=2), wd, dataset=_data())
    for e in (1, 2):
        _damage(wd, e)
    os.remove(os.path.join(wd, "results.json"))
    with pytest.raises(train.CheckpointError) as err:
        train.train_and_evaluate(_config(epochs=2), wd, dataset=_data())
    msg = str(err.value)
    assert os.path.join(wd, "checkpoints") in msg and "epoch 2" in msg and "epoch 1" in msg
    assert "--workdir" in msg and "--config.overwrite=True" in msg


def test_finished_run_is_reported_not_retrained_and_overwrite_retrains(tmp_path, reference):
    _, ref = reference
    wd = str(tmp_path)
    first = train.train_and_evaluate(_config(), wd, dataset=_data())
    mtime = os.path.getmtime(os.path.join(wd, "metrics.jsonl"))
    again = train.train_and_evaluate(_config(progress_bar=True), wd, dataset=_data())
    assert again["already_finished"] and again["test_accuracy"] == first["test_accuracy"]
    assert os.path.getmtime(os.path.join(wd, "metrics.jsonl")) == mtime
    fresh = train.train_and_evaluate(_config(overwrite=True), wd, dataset=_data())
    assert "already_finished" not in fresh and fresh["resumed_from_epoch"] == 0
    assert fresh["test_accuracy"] == ref["test_accuracy"]


def test_changed_config_in_the_same_workdir_is_refused(tmp_path):
    wd = str(tmp_path)
    train.train_and_evaluate(_config(epochs=1), wd, dataset=_data())
    with pytest.raises(train.ConfigError, match=r"learning_rate: 0\.05 -> 0\.1.*--workdir"):
        train.train_and_evaluate(_config(epochs=1, learning_rate=0.1), wd, dataset=_data())
    # More epochs continue the run (resume), fewer are refused.
    res = train.train_and_evaluate(_config(epochs=2), wd, dataset=_data())
    assert res["resumed_from_epoch"] == 1 and res["epochs"] == 2
    with pytest.raises(train.ConfigError, match="finished after 2 epochs"):
        train.train_and_evaluate(_config(epochs=1), wd, dataset=_data())


class _SigtermAt:
    """A dataset that sends this process SIGTERM in the middle of epoch ``epoch``."""

    def __init__(self, ds, epoch):
        self._ds, self._epoch = ds, epoch
        self.info, self.num_batches = ds.info, ds.num_batches

    def batches(self, split, batch_size, *, epoch=0, **kw):
        for i, b in enumerate(self._ds.batches(split, batch_size, epoch=epoch, **kw)):
            if split == "train" and epoch == self._epoch and i == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield b


def test_sigterm_stops_cleanly_and_the_same_call_resumes(tmp_path, reference):
    ref_dir, ref = reference
    wd = str(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(train.TrainingInterrupted) as err:
        train.train_and_evaluate(_config(), wd, dataset=_SigtermAt(_data(), 2))
    assert err.value.exit_code == 128 + signal.SIGTERM and err.value.last_epoch == 2
    assert "SIGTERM" in str(err.value) and "Resume with the same command" in str(err.value)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    assert train.Checkpointer(wd).latest_epoch() == 2
    res = train.train_and_evaluate(_config(), wd, dataset=_data())
    assert res["resumed_from_epoch"] == 2 and res["test_accuracy"] == ref["test_accuracy"]
    assert _history(wd) == _history(ref_dir)


@pytest.mark.parametrize("over,message", [
    ({"model_kwargs": {"widths": (0,)}}, r"model_kwargs.widths=\(0,\).*positive integers"),
    ({"model_kwargs": {"widths": (16, -2)}}, "positive integers"),
    ({"learning_rate": -0.1}, r"learning_rate=-0.1 must be a finite number > 0"),
    ({"learning_rate": float("nan")}, "learning_rate=nan must be a finite number > 0"),
    ({"learning_rate": float("inf")}, "learning_rate=inf"),
    ({"epochs": -1}, r"epochs=-1 must be an integer >= 1"),
    ({"batch_size": 0}, r"batch_size=0 must be an integer >= 1"),
    ({"weight_decay": -1e-4}, "weight_decay=-0.0001 must be a finite number >= 0"),
    ({"momentum": 1.5}, "momentum=1.5"),
    ({"schedule": "step", "decay_epochs": ()}, "decay_epochs=.*increasing epochs >= 1"),
    ({"schedule": "step", "decay_epochs": (3, 2)}, "increasing"),
    ({"schedule": "step", "decay_epochs": (2,), "decay_factor": 0.0}, "decay_factor=0.0"),
    ({"data_dir": "/nonexistent/alearn"}, "data_dir='/nonexistent/alearn' is not a directory"),
    ({"dataset": "cifar10", "data_dir": "/tmp"}, "dataset 'cifar10'.*not prepared"),
    ({"dataset": "sst2", "data_dir": "/tmp"}, "(?s)dataset 'sst2'.*not prepared.*tfds build glue/sst2"),
    ({"rule": "kp", "rule_hparams": {"weight_decay": -1.0}}, "rule 'kp'.*weight_decay"),
    ({"rule": "fa", "rule_hparams": {"bogus": 1}}, "unknown hyperparameter.*bogus"),
    ({"model_kwargs": {"depth": 3}}, "unknown field.*depth.*model 'mlp'"),
    ({"distributed": "yes"}, "unknown distributed 'yes'; choose one of: auto, off"),
    ({"rule": "al", "model": "mlp", "model_kwargs": {"widths": (8, 16)}}, "AL MLP has 2 blocks"),
    ({"rule": "al", "model": "cnn", "model_kwargs": {}, "pipeline_stages": 3},
     "does not divide the 4 blocks"),
    ({"rule": "al", "model": "cnn", "model_kwargs": {}, "pipeline_stages": 5},
     "exceeds the 4 blocks"),
    ({"rule": "al", "model": "cnn", "model_kwargs": {}, "pipeline_stages": 4,
      "pipeline_data": 4}, "needs 16 devices, but 8 are available"),
    ({"rule": "al", "model": "mlp", "model_kwargs": {}, "optimizer": "adamw"},
     "unknown optimizer 'adamw'; choose one of: adam, sgd"),
])
def test_validation_rejects_before_anything_is_written(tmp_path, over, message):
    c = _config()
    for k, v in over.items():
        if k == "model_kwargs":
            c.model_kwargs = ml_collections.ConfigDict(v)
        elif k in c:
            setattr(c, k, v)
        else:
            c[k] = v
    with pytest.raises(train.ConfigError, match=message):
        train.train_and_evaluate(c, str(tmp_path / "wd"))
    assert not os.path.exists(tmp_path / "wd")


def test_al_with_a_plain_model_name_means_the_al_model():
    c = _config(rule="al", model="mlp")
    c.model_kwargs = ml_collections.ConfigDict({"widths": (32, 32)})
    r = validate.resolve_config(c)
    assert r.model == "al_mlp" and r.model_kwargs.to_dict() == {"width": 32}
    assert c.model == "mlp"  # the caller's config is left alone
    validate.validate_config(c)
    assert validate.resolve_config(_config()) is not None
    bp = _config(rule="bp")
    assert validate.resolve_config(bp) is bp
