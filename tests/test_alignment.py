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
    lower = "Dense_0" if kind == "dense" else "Conv_0"
    # the output layer's update is δ_L hᵀ under every rule: angle 0
    assert out[f"update_vs_bp/{top}"] < 0.5
    assert out[f"update_vs_bp/{lower}"] > 5
    # independent random B and W are near-orthogonal
    assert 60 < out[f"b_vs_w/{lower}"] < 120
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
    for i in range(3):
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
        rule="wm", rule_hparams={"mirror_steps": 4}, model="mlp", model_kwargs={"widths": (16,)},
        dataset="synthetic", dataset_options={}, data_dir="", seed=0, epochs=2, batch_size=16,
        eval_batch_size=40, optimizer="sgd", learning_rate=0.05, momentum=0.9,
        weight_decay=0.0, schedule="constant", tensorboard=False, progress_bar=False,
        alignment=True))
    ds = alearn.data.create("synthetic", num_classes=4, image_shape=(4, 4, 1), num_train=64,
                            num_test=40, noise=0.5)
    train_and_evaluate(c, str(tmp_path), dataset=ds)
    with open(tmp_path / "metrics.jsonl") as f:
        recs = [json.loads(line) for line in f]
    assert len(recs) == 2 and {"b_vs_w/Dense_0", "update_vs_bp/Dense_1"} <= set(recs[0])
    # random B starts near 90° from W; 4 steps x 4 mirror updates bring it well below
    assert recs[0]["b_vs_w/Dense_1"] < 45 and recs[0]["update_vs_bp/Dense_1"] < 0.5
    assert os.path.getsize(tmp_path / "alignment.png") > 5000
