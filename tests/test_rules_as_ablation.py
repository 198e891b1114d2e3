"""The ASAP ablation knobs (issue 26): He-scaled dense-FA feedback, a trained first layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _as_models import TinyCNN

import alearn
from alearn import rules

KEY = jax.random.key(0)
X_IMG = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
Y = jnp.arange(4) % 3


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_dense_fa_feedback_init_he_normal_and_default_unchanged():
    model = TinyCNN()  # Dense_0: (32, 6)
    b_default = alearn.init(model, rules.create("asap"), KEY, X_IMG)["feedback"]["Dense_0"]
    b_unit = alearn.init(model, rules.create("asap", dense_feedback_init="uniform_unit"), KEY,
                         X_IMG)["feedback"]["Dense_0"]
    _close(b_default["B_fixed"], b_unit["B_fixed"])  # the default is the authors' U(-1, 1)
    b = np.asarray(alearn.init(model, rules.create("asap", dense_feedback_init="he_normal"),
                               KEY, X_IMG)["feedback"]["Dense_0"]["B_fixed"])
    # He: truncated normal with std sqrt(2 / fan_in) = 0.25, cut at 2 / 0.88 of it
    assert b.shape == (32, 6) and 0.15 < b.std() < 0.3 and np.abs(b).max() <= 2 * 0.25 / 0.87
    with pytest.raises(ValueError, match="dense_feedback_init"):
        rules.create("asap", dense_feedback_init="nope")


@pytest.mark.parametrize("name", ["asap", "asfp"])
def test_freeze_first_false_trains_the_first_layer(name):
    model = TinyCNN()
    frozen = alearn.init(model, rules.create(name), KEY, X_IMG)["feedback"]
    assert set(frozen[sorted(frozen)[0]]) == {"frozen"}  # the default: declared frozen
    rule = rules.create(name, k=1, decay=0.0, dense="own_input", freeze_first=False)
    v = alearn.init(model, rule, KEY, X_IMG)
    assert set(v["feedback"]["Conv_0"]) == {"B"}
    v = {**v, "feedback": {k: {"B": v["params"][k]["kernel"]} for k in v["feedback"]}}
    ub = alearn.rule_updates(model, rules.BP(), v, X_IMG, Y)["params"]
    ua = alearn.rule_updates(model, rule, v, X_IMG, Y)
    assert float(jnp.abs(ua["params"]["Conv_0"]["kernel"]).max()) > 0.0
    for layer in ub:  # k=1, own inputs, B = W: every layer's update is BP's, the first too
        jax.tree.map(_close, ub[layer], ua["params"][layer])
    with pytest.raises(ValueError, match="freeze_first"):
        rules.create(name, freeze_first=1)
