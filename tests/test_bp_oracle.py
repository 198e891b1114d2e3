"""The BP oracle: BP through alearn's models equals ``jax.grad`` of plain Flax models.

Each reference below is an independent re-implementation with ``nn.Dense`` / ``nn.Conv`` /
``nn.BatchNorm`` (no alearn layer, no Tape) that shares the library model's parameter tree
(same module names and shapes). For dense and conv layers, with and without BatchNorm
(train mode: the updated batch statistics must agree too; eval mode: running averages)
and with residual shortcuts (identity and projection) the loss, logits, updates and new
state agree to float rounding.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alearn
from alearn import models
from alearn.rules import BP

BN = dict(momentum=0.9, epsilon=1e-5)
# Tiny graphs: XLA's CPU backend optimisation costs more than it saves (halves compile time).
FAST = {"xla_backend_optimization_level": 0}


def _pool(x):
    """2x2/2 max-pool, ceil mode: pad odd sides at the end with -inf."""
    ph, pw = x.shape[1] % 2, x.shape[2] % 2
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
    return nn.max_pool(x, (2, 2), strides=(2, 2))


class PlainMLP(nn.Module):
    widths: tuple
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], -1)
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(self.num_classes)(x)


class PlainCNN(nn.Module):
    convs: tuple  # (features, stride)
    dense: tuple
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        for i, (f, s) in enumerate(self.convs):
            x = nn.elu(nn.Conv(f, (3, 3), strides=(s, s), padding="SAME", name=f"conv{i}")(x))
        x = x.reshape(x.shape[0], -1)
        for j, w in enumerate(self.dense):
            x = nn.elu(nn.Dense(w, name=f"fc{j}")(x))
        return nn.Dense(self.num_classes, name="classifier")(x)


class PlainAlexNet(nn.Module):
    convs: tuple
    dense: tuple
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        bn = lambda name: nn.BatchNorm(use_running_average=not train, name=name, **BN)
        for i, f in enumerate(self.convs):
            x = nn.Conv(f, (5, 5), padding=((2, 2), (2, 2)), use_bias=False, name=f"conv{i}")(x)
            x = _pool(nn.relu(bn(f"bn_conv{i}")(x)))
        x = x.reshape(x.shape[0], -1)
        for j, w in enumerate(self.dense):
            x = nn.relu(bn(f"bn_fc{j}")(nn.Dense(w, use_bias=False, name=f"fc{j}")(x)))
        x = nn.Dense(self.num_classes, use_bias=False, name="classifier")(x)
        return bn("bn_out")(x)


class PlainVGG(nn.Module):
    config: tuple
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        i = 0
        for c in self.config:
            if c == "M":
                x = _pool(x)
                continue
            x = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name=f"conv{i}")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, name=f"bn{i}", **BN)(x))
            i += 1
        return nn.Dense(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2)))


class PlainBlock(nn.Module):
    features: int
    stride: int
    shortcut: bool

    @nn.compact
    def __call__(self, x, train):
        bn = lambda name: nn.BatchNorm(use_running_average=not train, name=name, **BN)
        conv = lambda f, k, s, p, name: nn.Conv(f, (k, k), strides=(s, s), padding=((p, p), (p, p)),
                                                use_bias=False, name=name)
        h = nn.relu(bn("bn1")(conv(self.features, 3, self.stride, 1, "conv1")(x)))
        h = bn("bn2")(conv(self.features, 3, 1, 1, "conv2")(h))
        if not self.shortcut:
            return nn.relu(h)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = bn("shortcut_bn")(conv(self.features, 1, self.stride, 0, "shortcut_conv")(x))
        return nn.relu(h + x)


class PlainResNet(nn.Module):
    stages: tuple  # ((blocks, width), ...)
    shortcut: bool
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(self.stages[0][1], (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    name="stem_conv")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="stem_bn", **BN)(x))
        for s, (n, w) in enumerate(self.stages):
            for b in range(n):
                x = PlainBlock(w, 2 if (s and not b) else 1, self.shortcut,
                               name=f"stage{s}_block{b}")(x, train)
        return nn.Dense(self.num_classes, name="classifier")(x.mean(axis=(1, 2)))


CASES = {
    "dense": (models.create("mlp", 5, widths=(12, 9)), PlainMLP((12, 9), 5), (6, 4, 4, 1)),
    "conv": (models.create("cnn", 5, conv_widths=(3, 4, 5), conv_strides=(1, 2, 2),
                           dense_widths=(7, 6), activation="elu"),
             PlainCNN(((3, 1), (4, 2), (5, 2)), (7, 6), 5), (6, 9, 9, 2)),
    "conv_bn_pool": (models.create("alexnet", 5, conv_widths=(3, 4), dense_widths=(6,)),
                     PlainAlexNet((3, 4), (6,), 5), (6, 7, 7, 2)),
    "vgg_bn": (models.create("vgg16", 5, config=(3, "M", 4, 4, "M")),
               PlainVGG((3, "M", 4, 4, "M"), 5), (6, 8, 8, 3)),
    "residual": (models.create("resnet18", 5, stage_sizes=(2, 1), widths=(3, 4)),
                 PlainResNet(((2, 3), (1, 4)), True, 5), (6, 8, 8, 3)),
    "no_shortcut": (models.create("resnet18_nsc", 5, stage_sizes=(1, 1), widths=(3, 4)),
                    PlainResNet(((1, 3), (1, 4)), False, 5), (6, 8, 8, 3)),
}


@functools.partial(jax.jit, static_argnums=(0, 4), compiler_options=FAST)
def _plain_step(plain, variables, x, y, train):
    rest = {k: v for k, v in variables.items() if k != "params"}
    mutable = ["batch_stats"] if (train and "batch_stats" in variables) else False

    def loss_fn(params):
        out = plain.apply({"params": params, **rest}, x, train=train, mutable=mutable)
        logits, state = out if mutable else (out, {})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, state)

    (loss, (logits, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    return loss, logits, dict(state), grads


@functools.partial(jax.jit, static_argnums=(0, 4), compiler_options=FAST)
def _alearn_step(model, variables, x, y, train):
    return alearn.loss_and_updates(model, BP(), variables, x, y, train=train)


def _setup(case, seed=0):
    """(model, plain, x, y, variables); everything jitted (eager dispatch is slow on CPU)."""
    model, plain, shape = CASES[case]
    x = jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)
    y = jnp.arange(shape[0]) % 5
    variables = jax.jit(lambda k: alearn.init(model, BP(), k, x), compiler_options=FAST)(
        jax.random.key(seed))
    return model, plain, x, y, variables


def _close(actual, expected, what):
    """Equal to float rounding: within 1e-5 relative, or 1e-5 of the leaf's largest entry."""
    leaves_a, tree_a = jax.tree_util.tree_flatten(actual)
    leaves_e, tree_e = jax.tree_util.tree_flatten(expected)
    assert tree_a == tree_e, f"{what}: tree structures differ"
    for a, e in zip(leaves_a, leaves_e):
        scale = float(jnp.max(jnp.abs(e))) + 1e-30
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bp_equals_jax_grad_of_plain_model(case):
    model, plain, x, y, variables = _setup(case, seed=42)
    # The plain model shares the parameter tree (names, shapes) of the library model.
    plain_vars = jax.eval_shape(plain.init, jax.random.key(0), x)
    assert jax.tree_util.tree_map(jnp.shape, dict(plain_vars)) == jax.tree_util.tree_map(
        jnp.shape, variables)

    (loss, logits, state), upd = _alearn_step(model, variables, x, y, True)
    p_loss, p_logits, p_state, p_grads = _plain_step(plain, variables, x, y, True)
    assert set(upd) == {"params"}
    _close(loss, p_loss, "loss")
    _close(logits, p_logits, "logits")
    _close(upd["params"], p_grads, "BP updates vs jax.grad")
    _close(state, p_state, "new batch_stats")
    if "batch_stats" not in variables:
        return
    # The statistics really moved, identically; then eval mode (running averages) agrees too.
    moved = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)),
                                   state["batch_stats"], variables["batch_stats"])
    assert min(jax.tree_util.tree_leaves(moved)) > 0
    variables = {**variables, **state}
    (loss, logits, _), upd = _alearn_step(model, variables, x, y, False)
    p_loss, p_logits, _, p_grads = _plain_step(plain, variables, x, y, False)
    _close(logits, p_logits, "eval logits")
    _close(upd["params"], p_grads, "eval-mode BP updates vs jax.grad")


def test_rule_updates_entry_point_matches_plain_grad():
    model, plain, x, y, variables = _setup("residual", seed=3)
    upd = jax.jit(lambda v: alearn.rule_updates(model, BP(), v, x, y), compiler_options=FAST)(
        variables)
    _, _, _, p_grads = _plain_step(plain, variables, x, y, True)
    _close(upd["params"], p_grads, "rule_updates vs jax.grad")
    # And the update is a real descent direction: a small SGD step lowers the loss.
    params = jax.tree_util.tree_map(lambda p, g: p - 1e-2 * g, variables["params"], upd["params"])
    before = _alearn_step(model, variables, x, y, True)[0][0]
    after = _alearn_step(model, {**variables, "params": params}, x, y, True)[0][0]
    assert math.isfinite(float(after)) and float(after) < float(before)
