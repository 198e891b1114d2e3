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


class _FakeStep:
    """A step_fn for ``train_epoch``: metrics of step i carry i; ``nan_at`` gives NaN there."""

    def __init__(self, events, nan_at=None):
        self.events, self.nan_at, self.calls = events, nan_at, 0

    def __call__(self, states, x, labels):
        self.calls += 1
        self.events.append(("step", self.calls))
        bad = self.calls == self.nan_at
        return states + 1, {"assoc_loss": float("nan") if bad else 0.5 * self.calls,
                            "ae_loss": 1.0, "id": self.calls}


def _batches(n, size=3):
    import numpy as np
    return ({"image": np.zeros((size, 2), np.float32), "label": np.zeros(size, np.int32)}
            for _ in range(n))


def test_train_epoch_reads_metrics_one_step_late_and_names_the_nan_step(monkeypatch):
    """Issue 27: the host reads step t's metrics after dispatching step t + 1 (the first step
    is waited for before the clock starts); the sums are those of every step; a NaN
    associated loss still stops the run naming its own step and epoch."""
    import jax

    from alearn.al import train as al_train
    events = []
    real = jax.device_get

    def spy(tree):
        events.append(("read", tree["id"]))
        return real(tree)
    monkeypatch.setattr(jax, "device_get", spy)
    states, stats = al_train.train_epoch(_FakeStep(events), 0, _batches(4), step=10, epoch=2)
    assert events == [("step", 1), ("read", 1), ("step", 2), ("step", 3), ("read", 2),
                      ("step", 4), ("read", 3), ("read", 4)]
    assert states == 4 and (stats.step, stats.steps, stats.timed_samples) == (14, 4, 9)
    assert stats.sums == {"assoc_loss": 5.0, "ae_loss": 4.0, "id": 10.0}
    with pytest.raises(FloatingPointError,
                       match=r"^AL associated loss is nan at step 13 \(epoch 3\); lower the lr$"):
        al_train.train_epoch(_FakeStep([], nan_at=3), 0, _batches(6), step=10, epoch=2)
    with pytest.raises(FloatingPointError, match=r"at step 16 \(epoch 1\)"):  # the last step
        al_train.train_epoch(_FakeStep([], nan_at=6), 0, _batches(6), step=10, epoch=0)


def test_sequential_step_compiles_once_for_fresh_and_restored_states():
    """Issue 27: states placed by SequentialStep.place have the step's own output sharding,
    so a fresh init (and a checkpoint's host arrays) and the step's outputs share one
    compiled program; before, the second step recompiled inside the timed epoch."""
    import jax
    import numpy as np

    import alearn.al as al
    from alearn.al import train as al_train
    net = al.create("al_mlp", 4, (4, 4, 1), width_multiplier=0.02)
    x, lab = np.zeros((8, 4, 4, 1), np.float32), np.zeros(8, np.int32)
    fresh = net.init(jax.random.key(0))
    restored = jax.tree.map(np.asarray, net.init(jax.random.key(1)))  # host arrays
    for init in (fresh, restored):
        want = jax.tree.map(np.array, init)  # host copy: place may alias init, then donated
        step = al_train.SequentialStep(net)
        states, _ = al_train.train_epoch(step, step.place(init),
                                         ({"image": x, "label": lab} for _ in range(3)))
        assert step._step._cache_size() == 1  # pylint: disable=protected-access
        for _ in range(3):
            want, _ = jax.jit(lambda st, a, b: al.train_step(net, st, a, b))(want, x, lab)
        for g, w in zip(jax.tree.leaves(states), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-7)
