"""Oracles for alearn.train: optimizers, data-parallel step, loop, resume, NaN stop."""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import alearn
import alearn.data
from alearn import train
from alearn.train import setup
from _train_fixtures import loop_config, synthetic_data


# ----------------------------------------------------------------------------- optimizers

@pytest.mark.parametrize("kwargs,bad,valid", [
    (dict(optimizer="adagrad"), "adagrad", "adam, adamw, sgd"),
    (dict(optimizer="sgd", schedule="linear"), "linear", "constant, cosine, step"),
])
def test_unknown_optimizer_or_schedule_lists_valid_names(kwargs, bad, valid):
    with pytest.raises(ValueError, match=rf"'{bad}'.*{valid}"):
        train.create_optimizer(**kwargs)


def test_schedules_follow_papers():
    cos = train.create_schedule("cosine", 0.1, steps_per_epoch=10, epochs=5)
    assert math.isclose(float(cos(0)), 0.1, rel_tol=1e-6)
    assert math.isclose(float(cos(25)), 0.05, rel_tol=1e-5)  # half way: lr / 2
    assert abs(float(cos(50))) < 1e-8
    step = train.create_schedule("step", 1.0, steps_per_epoch=10, epochs=200,
                                 decay_epochs=(80, 120), decay_factor=0.5)
    got = [float(step(s)) for s in (0, 799, 800, 1199, 1200, 1999)]
    np.testing.assert_allclose(got, [1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_weight_decay_and_momentum_touch_params_only():
    """SGD(lr, momentum m, wd): v <- m v + g + wd w ; w <- w - lr v (torch/ASAP); feedback
    weights get the gradient only (their decay is the rule's business)."""
    opt = train.create_optimizer("sgd", 0.5, momentum=0.9, weight_decay=0.1)
    w0 = {"params": {"k": jnp.array([1.0, -2.0])}, "feedback": {"b": jnp.array([3.0])}}
    g = {"params": {"k": jnp.array([0.2, 0.0])}, "feedback": {"b": jnp.array([1.0])}}
    st = opt.init(w0)
    w = w0
    vk, vb = np.zeros(2), np.zeros(1)
    wk, wb = np.array([1.0, -2.0]), np.array([3.0])
    for _ in range(2):
        u, st = opt.update(g, st, w)
        w = optax.apply_updates(w, u)
        vk = 0.9 * vk + np.array([0.2, 0.0]) + 0.1 * wk
        vb = 0.9 * vb + 1.0
        wk, wb = wk - 0.5 * vk, wb - 0.5 * vb
    np.testing.assert_allclose(w["params"]["k"], wk, rtol=1e-6)
    np.testing.assert_allclose(w["feedback"]["b"], wb, rtol=1e-6)


# ----------------------------------------------------------------------------- steps

def _batches(n, bs, shape=(8, 8, 1), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.normal(size=(bs, *shape)).astype(np.float32),
             "label": rng.integers(0, classes, bs).astype(np.int32)} for _ in range(n)]


def _run_steps(model, devices, batches, hook=None):
    rule = alearn.rules.create("bp")
    opt = train.create_rule_optimizer(rule, train.create_optimizer(
        "sgd", 0.1, momentum=0.9, weight_decay=1e-3, schedule="cosine", steps_per_epoch=4,
        epochs=2))
    mesh = train.data_mesh(devices)
    state = train.create_train_state(model, rule, opt, jax.random.key(0), batches[0]["image"])
    state = train.replicate(state, mesh)
    step = train.make_train_step(model, rule, opt, mesh=mesh, step_hook=hook)
    sizes, losses = [], []
    for b in batches:
        state, m = step(state, train.shard_batch(b, mesh))
        sizes.append(step._cache_size())
        losses.append(float(m["loss"]))
    return jax.device_get(state), losses, sizes


@pytest.mark.parametrize("model_name,kwargs", [
    ("mlp", dict(widths=(16,))),
    ("resnet20", dict(stage_sizes=(1,), widths=(4,))),  # BatchNorm: batch_stats in `fixed`
])
def test_one_and_eight_devices_agree(model_name, kwargs):
    assert jax.local_device_count() == 8, "conftest forces 8 host devices"
    model = alearn.models.create(model_name, 4, **kwargs)
    batches = _batches(4, 16)
    s1, l1, _ = _run_steps(model, jax.local_devices()[:1], batches)
    s8, l8, sizes = _run_steps(model, jax.local_devices(), batches)
    assert sizes[0] == sizes[-1], f"train step recompiled: cache sizes {sizes}"
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 s1.trainable, s8.trainable)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 s1.fixed, s8.fixed)
    assert int(s8.step) == 4
    assert (model_name != "resnet20") or "batch_stats" in s8.fixed


def test_batch_not_divisible_by_devices_falls_back_and_agrees():
    model = alearn.models.create("mlp", 4, widths=(16,))
    batches = _batches(2, 12)  # 12 rows on 8 devices
    s1, l1, _ = _run_steps(model, jax.local_devices()[:1], batches)
    s8, l8, _ = _run_steps(model, jax.local_devices(), batches)
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 s1.trainable, s8.trainable)


def test_step_hook_runs_after_update_with_per_step_key():
    seen = []

    def hook(state, batch, key):
        seen.append(key)
        bias = jax.random.uniform(key, (4,))  # e.g. a mirror phase's noise
        params = dict(state.trainable["params"])
        params["Dense_1"] = {**params["Dense_1"], "bias": bias}
        return state.replace(trainable={**state.trainable, "params": params})

    model = alearn.models.create("mlp", 4, widths=(16,))
    state, _, _ = _run_steps(model, jax.local_devices()[:1], _batches(2, 8), hook=hook)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 1)  # step index of call 2
    np.testing.assert_allclose(state.trainable["params"]["Dense_1"]["bias"],
                               jax.random.uniform(key, (4,)))


def test_eval_padding_masks_rows():
    model = alearn.models.create("mlp", 4, widths=(8,))
    rule = alearn.rules.create("bp")
    b = _batches(1, 5)[0]
    state = train.create_train_state(model, rule, optax.sgd(0.1), jax.random.key(1), b["image"])
    logits = model.apply(state.variables(), b["image"], rule=rule)
    want_loss = optax.softmax_cross_entropy_with_integer_labels(logits, b["label"]).sum()
    mesh = train.data_mesh()
    step = train.make_eval_step(model, rule, mesh=mesh)
    out = step(train.replicate(state, mesh), train.shard_batch(train.pad_batch(b, 8), mesh))
    assert float(out["count"]) == 5
    np.testing.assert_allclose(out["loss_sum"], want_loss, rtol=1e-5)
    assert float(out["correct"]) == float((np.argmax(logits, -1) == b["label"]).sum())


# ----------------------------------------------------------------------------- loop

_config = loop_config


_synthetic = synthetic_data


class _Interrupted(Exception):
    pass


class _DyingDataset:
    """Delegates to a dataset but dies after 2 batches of epoch ``die_at`` (a killed run)."""

    def __init__(self, ds, die_at):
        self._ds, self._die_at = ds, die_at
        self.info = ds.info
        self.num_batches = ds.num_batches

    def batches(self, split, batch_size, *, epoch=0, **kw):
        for i, b in enumerate(self._ds.batches(split, batch_size, epoch=epoch, **kw)):
            if split == "train" and epoch == self._die_at and i == 2:
                raise _Interrupted
            yield b


def _strip(records):
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in records]


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    ref = train.train_and_evaluate(_config(), full, dataset=_synthetic())
    with pytest.raises(_Interrupted):
        train.train_and_evaluate(_config(), cut, dataset=_DyingDataset(_synthetic(), 2))
    assert train.Checkpointer(cut).latest_epoch() == 2
    res = train.train_and_evaluate(_config(), cut, dataset=_synthetic())
    assert res["resumed_from_epoch"] == 2 and ref["resumed_from_epoch"] == 0
    assert res["test_accuracy"] == ref["test_accuracy"] and res["steps"] == ref["steps"] == 12
    hist = [train.MetricsWriter(d, tensorboard=False).history() for d in (full, cut)]
    assert [r["epoch"] for r in hist[1]] == [1, 2, 3]
    assert _strip(hist[0]) == _strip(hist[1])
    # Final checkpoints hold the same state.
    model = alearn.models.create("mlp", 4, widths=(16,))
    rule = alearn.rules.create("bp")
    opt = train.optimizer_from_config(_config(), rule, 4)
    tmpl = train.create_train_state(model, rule, opt, jax.random.key(9), np.zeros((1, 4, 4, 1)))
    a, b = (train.Checkpointer(d).restore(3, tmpl) for d in (full, cut))
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_results_json_and_outputs(tmp_path):
    wd = str(tmp_path)
    res = train.train_and_evaluate(_config(epochs=2), wd, dataset=_synthetic())
    with open(os.path.join(wd, "results.json")) as f:
        saved = json.load(f)
    hist = train.MetricsWriter(wd, tensorboard=False).history()
    assert saved["rule"] == "bp" and saved["model"] == "mlp" and saved["dataset"] == "synthetic"
    assert saved["epochs"] == 2 and len(hist) == 2
    assert saved["test_accuracy"] == hist[-1]["test_accuracy"] == res["test_accuracy"]
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    # 50 test rows: accuracy is a multiple of 1/50 (padding rows are not counted).
    assert abs(saved["test_accuracy"] * 50 - round(saved["test_accuracy"] * 50)) < 1e-6
    assert saved["num_params"] == (16 * 16 + 16) + (16 * 4 + 4)
    assert saved["train_samples_per_second"] > 0
    assert saved["config"]["learning_rate"] == 0.05
    assert os.path.getsize(os.path.join(wd, "curves.png")) > 1000
    assert any(f.startswith("events.out.tfevents")
               for f in os.listdir(os.path.join(wd, "tensorboard")))
    assert train.Checkpointer(wd).all_epochs() == [1, 2]


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path):
    wd = str(tmp_path)
    # Epochs 1-2 train normally; at epoch 2 the step schedule multiplies lr by 1e30.
    cfg = _config(epochs=4, schedule="step", decay_epochs=(2,), decay_factor=1e30,
                  momentum=0.0, weight_decay=0.0)
    with pytest.raises(train.TrainingDivergedError, match=r"step \d+ \(epoch 3\)") as err:
        train.train_and_evaluate(cfg, wd, dataset=_synthetic())
    assert err.value.epoch == 3 and 8 < err.value.step <= 12
    assert err.value.checkpoint_epoch == 2 and "after epoch 2" in str(err.value)
    ckpt = train.Checkpointer(wd)
    assert ckpt.latest_epoch() == 2
    assert [r["epoch"] for r in train.MetricsWriter(wd, tensorboard=False).history()] == [1, 2]
    assert not os.path.exists(os.path.join(wd, "results.json"))
    model = alearn.models.create("mlp", 4, widths=(16,))
    rule = alearn.rules.create("bp")
    tmpl = train.create_train_state(model, rule, train.optimizer_from_config(cfg, rule, 4),
                                    jax.random.key(0), np.zeros((1, 4, 4, 1)))
    good = ckpt.restore(2, tmpl)
    assert int(good.step) == 8
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(good.trainable))


@pytest.mark.parametrize("field,bad,listed", [
    ("rule", "fb", "bp"), ("model", "mlpp", "mlp"), ("dataset", "mnist6k", "mnist5k"),
    ("optimizer", "rmsprop", "adam"), ("schedule", "warm", "cosine"),
])
def test_bad_names_fail_before_training(tmp_path, field, bad, listed):
    with pytest.raises(ValueError, match=rf"unknown {field} '{bad}'; choose one of: .*{listed}"):
        train.train_and_evaluate(_config(**{field: bad}), str(tmp_path))
    assert not os.listdir(tmp_path)


def test_rule_family_dispatch(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(setup, "FAMILY_TRAINERS", {"al": "tests.test_train:_fake_al"})
    monkeypatch.setitem(globals(), "_fake_al",
                        lambda c, w, dataset: calls.append((c.rule, w, dataset)) or {"x": 1})
    import sys
    monkeypatch.setitem(sys.modules, "tests.test_train", sys.modules[__name__])
    cfg = _config(rule="al", model="al_mlp")
    cfg.model_kwargs = ml_collections.ConfigDict({"width_multiplier": 0.1})
    assert train.train_and_evaluate(cfg, str(tmp_path)) == {"x": 1}
    assert calls == [("al", str(tmp_path), None)]


def test_wrapped_model_run_writes_what_trains_how(tmp_path):
    """A registered plain-Flax model: the workdir gets ``describe.txt`` with every
    parameter and the rule that updates it."""
    cfg = _config(rule="dfa", model="flax_cnn", epochs=1, tensorboard=False)
    cfg.model_kwargs = {"features": (2, 3), "hidden": 5}
    train.train_and_evaluate(cfg, str(tmp_path), dataset=_synthetic())
    text = (tmp_path / "describe.txt").read_text()
    assert "under rule 'dfa'" in text
    kernels = [ln for ln in text.splitlines() if "/kernel" in ln]
    assert len(kernels) == 4 and all(" dfa " in ln for ln in kernels)
