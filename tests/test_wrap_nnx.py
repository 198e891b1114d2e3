"""alearn.wrap_nnx: flax.nnx models trained by the rules, against the native models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import alearn
from alearn.rules import BP
from tests import _wrap_models as wm


@pytest.mark.parametrize("rule_name,kind", [
    ("bp", "mlp"), ("fa", "cnn"), ("dfa", "mlp"), ("dfa", "cnn"), ("sign", "cnn"),
    ("kp", "mlp"),
])
def test_nnx_twin_equals_native_model(rule_name, kind):
    native, twin_cls, x, y = wm.nnx_pair(kind)
    rule = alearn.rules.create(rule_name)
    v = alearn.init(native, rule, jax.random.key(3), x)
    model = alearn.wrap_nnx(twin_cls(nnx.Rngs(0)), rule, x, jax.random.key(4))
    dropped = wm.load_into_nnx(model, v)
    # the same feedback at the same layers (under DFA neither wrapper gives the layer
    # reading the model input a D: its signal is discarded)
    assert dropped == set()
    want = alearn.rule_updates(native, rule, v, x, y)  # (DFA's D has no update)
    (loss, _), grads = alearn.nnx_value_and_updates(alearn.cross_entropy, model, x, y)
    got = wm.nnx_as_native(grads)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert wm.max_diff(got, want) <= 1e-6 * wm.max_abs(want)
    if rule_name == "bp":  # and BP is nnx.grad of the plain twin
        plain = twin_cls(nnx.Rngs(0))
        nnx.update(plain, nnx.state(model.model, nnx.Param))
        g = nnx.grad(lambda m: alearn.cross_entropy(m(x), y))(plain)
        assert wm.max_diff(grads["model"], g) <= 1e-6 * wm.max_abs(g)


def test_nnx_optimizer_and_jit_train_kp_and_keep_the_decay_transform():
    """nnx.Optimizer + nnx.jit: KP's B gets W's update plus decay (the rule's transform)."""
    _, twin_cls, x, y = wm.nnx_pair("mlp")
    rule = alearn.rules.create("kp", weight_decay=0.1, decay_kernel=True)
    model = alearn.wrap_nnx(twin_cls(nnx.Rngs(0)), rule, x, jax.random.key(1))
    opt = nnx.Optimizer(model, alearn.nnx_transform(rule, optax.sgd(0.5), model),
                        wrt=alearn.nnx_trainable(rule))

    @nnx.jit
    def step(model, opt, x, y):
        (loss, _), g = alearn.nnx_value_and_updates(alearn.cross_entropy, model, x, y)
        opt.update(model, g)
        return loss

    def gap():
        w = model.model.Dense_1.kernel[...]
        return float(jnp.linalg.norm(w - model.model.Dense_1.B[...]))

    g0 = gap()
    losses = [float(step(model, opt, x, y)) for _ in range(3)]
    # W - B shrinks by exactly (1 - lr * λ) per SGD step (identical non-decay updates)
    assert abs(gap() - g0 * (1 - 0.5 * 0.1) ** 3) <= 1e-4 * g0
    assert losses[-1] < losses[0]


def test_nnx_misuse_raises():
    _, twin_cls, x, _ = wm.nnx_pair("mlp")
    model = alearn.wrap_nnx(twin_cls(nnx.Rngs(0)), alearn.rules.create("fa"), x,
                            jax.random.key(1))
    with pytest.raises(RuntimeError, match="must be called through the wrapper"):
        model.model(x)  # the inner model alone would silently run BP

    class Empty(nnx.Module):
        def __init__(self):
            self.norm = nnx.LayerNorm(9, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.norm(x)

    with pytest.raises(ValueError, match=r"wrap_nnx\(Empty\): no supported layer"):
        alearn.wrap_nnx(Empty(), BP(), x, jax.random.key(0))
    with pytest.raises(ValueError, match=r"\['block\*'\] match no module path"):
        alearn.wrap_nnx(twin_cls(nnx.Rngs(0)), alearn.rules.create("asap"), x,
                        jax.random.key(0), blocks=("block*",))
