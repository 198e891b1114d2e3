"""Oracle tests for alignment diagnostics (update-vs-BP and B-vs-W angles)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import alearn
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
