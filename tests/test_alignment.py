"""Oracle tests for alignment diagnostics (update-vs-BP and B-vs-W angles)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import alearn
import alearn.data
from alearn.analysis import alignment_angles, angle, plot_alignment
from alearn.rules import create
from tests._wt_models import data


def test_angle_known_values():
    a = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_allclose(angle(a, 3 * a), 0.0, atol=0.05)
    np.testing.assert_allclose(angle(a, -a), 180.0, atol=0.05)
    np.testing.assert_allclose(angle(jnp.array([1.0, 0.0]), jnp.array([1.0, 1.0])), 45.0,
                               atol=1e-4)
    np.testing.assert_allclose(angle(jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0])), 90.0)


def _setup(rule, kind="dense"):
    model, x, y = data(kind)
    return model, alearn.init(model, rule, jax.random.key(1), x), x, y


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_fa_angles(kind):
    rule = create("fa")
    model, variables, x, y = _setup(rule, kind)
    out = alignment_angles(model, rule, variables, x, y)
    top = "Dense_2" if kind == "dense" else "Dense_0"
    first, lower = ("Dense_0", "Dense_1") if kind == "dense" else ("Conv_0", "Conv_1")
    # the output layer's update is δ_L hᵀ under every rule: angle 0
    assert out[f"update_vs_bp/{top}"] < 0.5
    assert out[f"update_vs_bp/{lower}"] > 5
    # independent random B and W are near-orthogonal
    assert 60 < out[f"b_vs_w/{lower}"] < 120
    # the first layer's B would only carry the error to the input: never used, not reported
    assert f"b_vs_w/{first}" not in out and f"update_vs_bp/{first}" in out
    full = alignment_angles(model, rule, variables, x, y, skip_unused=False)
    assert 60 < full[f"b_vs_w/{first}"] < 120
    # B := W gives zero angles everywhere
    fb = traverse_util.flatten_dict(variables["feedback"])
    p = traverse_util.flatten_dict(variables["params"])
    same = traverse_util.unflatten_dict({k: p[k[:-1] + ("kernel",)] for k in fb})
    out = alignment_angles(model, rule, {**variables, "feedback": same}, x, y)
    assert max(out.values()) < 0.5, out


def test_bp_angles_zero_and_dfa_has_no_feedback_angle():
    model, variables, x, y = _setup(create("bp"))
    out = alignment_angles(model, create("bp"), variables, x, y)
    assert set(out) == {f"update_vs_bp/Dense_{i}" for i in range(3)}
    assert max(out.values()) < 0.5
    rule = create("dfa")
    model, variables, x, y = _setup(rule)
    out = alignment_angles(model, rule, variables, x, y)
    assert set(out) == {f"update_vs_bp/Dense_{i}" for i in range(3)}
    assert out["update_vs_bp/Dense_2"] < 0.5 and out["update_vs_bp/Dense_0"] > 5


def test_sign_feedback_angle():
    rule = create("sign")
    model, variables, x, y = _setup(rule)
    out = alignment_angles(model, rule, variables, x, y)
    # sign(W) vs W for Gaussian-like W: cos = E|w| / sqrt(E w²) ≈ sqrt(2/π) -> about 37°
    assert "b_vs_w/Dense_0" not in out  # sign(W_0) would only reach the input: unused
    for i in (1, 2):
        assert 30 < out[f"b_vs_w/Dense_{i}"] < 45
    unit = jax.tree_util.tree_map(jnp.sign, variables["params"])
    out = alignment_angles(model, rule, {**variables, "params": unit}, x, y)
    assert max(v for k, v in out.items() if k.startswith("b_vs_w")) < 0.5


def test_plot_alignment(tmp_path):
    hist = [{"epoch": e, "update_vs_bp/Dense_0": 80 - 10 * e, "b_vs_w/Dense_0": 89 - 5 * e,
             "test_accuracy": 0.5} for e in range(4)]
    path = plot_alignment(hist, str(tmp_path / "angles.png"), title="fa")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 5000
    with pytest.raises(ValueError, match="non-empty"):
        plot_alignment([], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="update_vs_bp"):
        plot_alignment([{"loss": 1.0}], str(tmp_path / "x.png"))


def test_trainer_logs_alignment_and_runs_wm_mirror(tmp_path):
    """config.alignment logs angles per epoch + alignment.png; WM's hook mirrors B."""
    import json

    import ml_collections

    from alearn.train import train_and_evaluate

    c = ml_collections.ConfigDict(dict(
        rule="wm", rule_hparams={"mirror_steps": 4, "mirror_every": 1}, model="mlp", model_kwargs={"widths": (16,)},
        dataset="synthetic", dataset_options={}, data_dir="", seed=0, epochs=2, batch_size=16,
        eval_batch_size=40, optimizer="sgd", learning_rate=0.05, momentum=0.9,
        weight_decay=0.0, schedule="constant", tensorboard=False, progress_bar=False,
        alignment=True))
    ds = alearn.data.create("synthetic", num_classes=4, image_shape=(4, 4, 1), num_train=64,
                            num_test=40, noise=0.5)
    train_and_evaluate(c, str(tmp_path), dataset=ds)
    with open(tmp_path / "metrics.jsonl") as f:
        recs = [json.loads(line) for line in f]
    assert len(recs) == 2 and {"b_vs_w/Dense_1", "update_vs_bp/Dense_1"} <= set(recs[0])
    assert "b_vs_w/Dense_0" not in recs[0]  # the first layer's B is never used
    # random B starts near 90° from W; 4 steps x 4 mirror updates bring it well below
    assert recs[0]["b_vs_w/Dense_1"] < 45 and recs[0]["update_vs_bp/Dense_1"] < 0.5
    assert os.path.getsize(tmp_path / "alignment.png") > 5000


def _mse(logits, y):
    return 0.5 * jnp.mean(jnp.sum((logits - jax.nn.one_hot(y, logits.shape[-1])) ** 2, -1))


def _np_angle(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


def test_angles_use_the_loss_trained_numpy_oracle():
    """FA's hidden update vs BP's gradient, both of an MSE loss, written out in NumPy."""
    from tests._wt_models import mlp

    model = mlp(widths=(8,))
    x = np.asarray(jax.random.normal(jax.random.key(3), (6, 10)))
    y = np.arange(6) % 5
    rule = create("fa")
    variables = alearn.init(model, rule, jax.random.key(4), x)
    p = jax.tree.map(np.asarray, variables["params"])
    w0, b0, w1, b1 = (p["Dense_0"]["kernel"], p["Dense_0"]["bias"], p["Dense_1"]["kernel"],
                      p["Dense_1"]["bias"])
    bmat = np.asarray(variables["feedback"]["Dense_1"]["B"])
    h_pre = x @ w0 + b0
    out = np.maximum(h_pre, 0) @ w1 + b1
    e = (out - np.eye(5)[y]) / len(y)  # d(mean 0.5 |out - onehot|²) / d out
    bp = x.T @ ((e @ w1.T) * (h_pre > 0))
    fa = x.T @ ((e @ bmat.T) * (h_pre > 0))
    got = alignment_angles(model, rule, variables, x, y, loss_fn=_mse)
    np.testing.assert_allclose(got["update_vs_bp/Dense_0"], _np_angle(fa, bp), atol=0.05)
    assert got["update_vs_bp/Dense_1"] < 0.5
    # against the cross-entropy gradient the angle is that of the CE error: the loss matters
    ce = alignment_angles(model, rule, variables, x, y)
    z = np.exp(out - out.max(-1, keepdims=True))
    e_ce = (z / z.sum(-1, keepdims=True) - np.eye(5)[y]) / len(y)
    ce_angle = _np_angle(x.T @ ((e_ce @ bmat.T) * (h_pre > 0)), x.T @ ((e_ce @ w1.T) * (h_pre > 0)))
    np.testing.assert_allclose(ce["update_vs_bp/Dense_0"], ce_angle, atol=0.05)
    assert abs(ce_angle - _np_angle(fa, bp)) > 0.1
    # BP with the loss it trains is its own reference: zero everywhere
    bp_out = alignment_angles(model, create("bp"), {"params": variables["params"]}, x, y,
                              loss_fn=_mse)
    assert set(bp_out) == {"update_vs_bp/Dense_0", "update_vs_bp/Dense_1"}
    assert max(bp_out.values()) < 0.5


def test_unused_feedback_layers_is_the_layer_fed_by_the_input():
    from alearn.analysis.alignment import unused_feedback_layers

    for kind, first in (("dense", "Dense_0"), ("conv", "Conv_0")):
        model, x, y = data(kind)
        variables = alearn.init(model, create("fa"), jax.random.key(1), x)
        assert unused_feedback_layers(model, variables, x, y) == {first}


def test_trainer_alignment_every_n_steps(tmp_path):
    """--config.alignment_every=3: angles at steps 3, 6 (4 steps an epoch, 2 epochs)."""
    import json

    import ml_collections

    from alearn.train import train_and_evaluate

    c = ml_collections.ConfigDict(dict(
        rule="fa", rule_hparams={}, model="mlp", model_kwargs={"widths": (16,)},
        dataset="synthetic", dataset_options={}, data_dir="", seed=0, epochs=2, batch_size=16,
        eval_batch_size=40, optimizer="sgd", learning_rate=0.05, momentum=0.9,
        weight_decay=0.0, schedule="constant", tensorboard=False, progress_bar=False,
        alignment=True, alignment_every=3))
    ds = alearn.data.create("synthetic", num_classes=4, image_shape=(4, 4, 1), num_train=64,
                            num_test=40, noise=0.5)
    train_and_evaluate(c, str(tmp_path), dataset=ds)
    with open(tmp_path / "alignment.jsonl") as f:
        recs = [json.loads(line) for line in f]
    assert [r["step"] for r in recs] == [3, 6]
    assert [r["epoch"] for r in recs] == [0.75, 1.5]
    assert {"update_vs_bp/Dense_0", "b_vs_w/Dense_1"} <= set(recs[0])
    assert recs[0]["update_vs_bp/Dense_1"] < 0.5
    with open(tmp_path / "metrics.jsonl") as f:  # the per-epoch log is kept as well
        assert all("update_vs_bp/Dense_0" in json.loads(line) for line in f)
    c.alignment_every = -1
    with pytest.raises(ValueError, match="alignment_every=-1"):
        train_and_evaluate(c, str(tmp_path / "bad"), dataset=ds)
