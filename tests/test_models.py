"""Oracles for the model zoo: registry, forward/BP in both modes, grouping, parameter counts."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alearn
from alearn import models
from alearn.rules import BP
from alearn.rules.base import Rule

FAST = {"xla_backend_optimization_level": 0}  # tiny graphs: compile time dominates
MNIST, CIFAR, TINY = (28, 28, 1), (32, 32, 3), (64, 64, 3)

# name -> (width_multiplier for a tiny model, input (H, W, C)); every registered model.
TINY_MODELS = {
    "mlp": (1 / 64, MNIST),
    "cnn": (1 / 8, MNIST),
    "alexnet": (1 / 16, MNIST),
    "alexnet_thesis": (1 / 16, CIFAR),
    "vgg16": (1 / 16, CIFAR),
    "resnet20": (1 / 4, CIFAR),
    "resnet32": (1 / 4, CIFAR),
    "resnet18": (1 / 16, TINY),
    "resnet34": (1 / 16, CIFAR),
    "resnet18_nsc": (1 / 16, CIFAR),
}



def test_every_registered_model_is_covered():
    # The "al_*" BP twins are registered by alearn.al and tested in tests/test_al.py; the
    # wrapped plain-Flax "flax_cnn" (no width_multiplier) in tests/test_wrap.py.
    assert sorted(TINY_MODELS) == [n for n in models.names()
                                   if not n.startswith("al_") and n != "flax_cnn"]


def _paths(tree):
    return {"/".join(str(k.key) for k in path): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _random_variables(model, x, seed=0):
    """alearn.init's variable tree (checked via eval_shape), filled without compiling init:
    kernels He-normal from numpy, BN scale 1 / bias 0 / mean 0 / var 1, other biases 0."""
    shapes = jax.eval_shape(lambda: alearn.init(model, BP(), jax.random.key(0), x))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            std = math.sqrt(2.0 / math.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.standard_normal(leaf.shape) * std, jnp.float32)
        return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_kernel_init_is_he_normal():
    model = models.create("cnn", 10, conv_widths=(64, 64), conv_strides=(2, 2), dense_widths=())
    v = jax.jit(lambda k: alearn.init(model, BP(), k, jnp.zeros((1, 8, 8, 3))))(jax.random.key(0))
    for name, fan_in, tol in (("conv0", 27, 0.1), ("conv1", 576, 0.05), ("classifier", 256, 0.2)):
        w = np.asarray(v["params"][name]["kernel"])
        std = math.sqrt(2.0 / fan_in)  # He et al.; truncated at 2 std and rescaled to this std
        assert abs(w.std() / std - 1) < tol, (name, w.std(), std)
        assert np.abs(w).max() <= 2 * std / 0.8796 + 1e-6
        assert float(np.abs(v["params"][name]["bias"]).max()) == 0.0
    assert v["params"]["conv1"]["kernel"].shape == (3, 3, 64, 64)


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_tiny_model_forward_and_bp(name):
    mult, hwc = TINY_MODELS[name]
    model = models.create(name, 7, width_multiplier=mult)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, *hwc)), jnp.float32)
    # Same first example, different rest of the batch (shifted and scaled).
    x2 = x.at[1:].set(jnp.asarray(rng.standard_normal((3, *hwc)), jnp.float32) * 3.0 + 1.0)
    y = jnp.array([0, 3, 6, 2])
    variables = _random_variables(model, x)
    has_bn = "batch_stats" in variables

    def check(v):
        ev = model.apply(v, jnp.concatenate([x, x2]), rule=BP(), train=False)
        (_, tr, state), upd = alearn.loss_and_updates(model, BP(), v, x, y, train=True)
        return ev, tr, state, upd

    ev, tr, state, upd = jax.jit(check, compiler_options=FAST)(variables)
    for logits in (ev, tr):
        assert logits.shape[1:] == (7,) and bool(jnp.all(jnp.isfinite(logits)))
    # Eval mode: running statistics, so example 0's output ignores the rest of the batch.
    np.testing.assert_allclose(ev[0], ev[4], rtol=1e-5, atol=1e-6)
    if has_bn:  # train mode normalises with the batch's statistics and moves the state
        assert float(jnp.max(jnp.abs(tr[0] - ev[0]))) > 1e-4
        assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(
            {"batch_stats": variables["batch_stats"]})
        moved = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(
            jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(variables["batch_stats"]))]
        assert min(moved) > 0
    else:
        np.testing.assert_allclose(ev[:4], tr, rtol=1e-5, atol=1e-6)
        assert state == {}
    # BP updates: the params' tree and shapes, finite, and no parameter left disconnected.
    assert set(upd) == {"params"}
    assert _paths(upd["params"]) == _paths(variables["params"])
    for path, leaf in jax.tree_util.tree_leaves_with_path(upd["params"]):
        assert bool(jnp.all(jnp.isfinite(leaf))), path
        assert float(jnp.max(jnp.abs(leaf))) > 0, f"zero update for {path}"


@pytest.mark.parametrize("name,hwc", [
    ("cnn", CIFAR), ("alexnet", CIFAR), ("alexnet", TINY), ("vgg16", MNIST), ("vgg16", TINY),
    ("resnet20", MNIST), ("resnet34", TINY), ("resnet18_nsc", TINY),
])
def test_other_input_sizes(name, hwc):
    model = models.create(name, 200, width_multiplier=1 / 16)
    x = jax.ShapeDtypeStruct((2, *hwc), jnp.float32)
    v = jax.eval_shape(lambda: alearn.init(model, BP(), jax.random.key(0), jnp.zeros(x.shape)))
    out = jax.eval_shape(lambda v, x: model.apply(v, x, rule=BP(), train=False), v, x)
    assert out.shape == (2, 200)


_EVENTS = []


@dataclasses.dataclass(frozen=True)
class _Recorder(Rule):
    """BP that records block marks (layer index, input shape) and rule-aware layers."""

    def on_block(self, tape, x):
        _EVENTS.append(("block", tape.layer_index, x.shape))

    def context(self, tape, x, op):
        _EVENTS.append(("layer", tape.layer_index, x.shape))


def _trace(name, **overrides):
    model = models.create(name, 10, **overrides)
    x = jnp.zeros((2, *(MNIST if name in ("mlp", "cnn") else CIFAR)))
    v = jax.eval_shape(lambda: alearn.init(model, BP(), jax.random.key(0), x))
    _EVENTS.clear()
    jax.eval_shape(lambda v: model.apply(v, x, rule=_Recorder(), train=True,
                                         mutable=["batch_stats"]), v)
    blocks = [(i, s) for kind, i, s in _EVENTS if kind == "block"]
    layers = [i for kind, i, _ in _EVENTS if kind == "layer"]
    return v, blocks, layers


def _expected_marks(stage_sizes, widths, shortcut, side=32):
    """(layer index, input shape) of every residual block: stem = layer 0, each block has
    conv1, conv2 and, where the shape changes (and shortcuts are on), a projection."""
    marks, index, c = [], 1, widths[0]
    for s, (n, w) in enumerate(zip(stage_sizes, widths)):
        for b in range(n):
            marks.append((index, (2, side, side, c)))
            stride = 2 if (s and not b) else 1
            index += 2 + int(shortcut and (stride != 1 or c != w))
            side, c = side // stride, w
    return marks


RESNETS = {
    "resnet20": ((3, 3, 3), (16, 32, 64), True), "resnet32": ((5, 5, 5), (16, 32, 64), True),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512), True),
    "resnet34": ((3, 4, 6, 3), (64, 128, 256, 512), True),
    "resnet18_nsc": ((2, 2, 2, 2), (64, 128, 256, 512), False),
}


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_block_marks_at_residual_block_inputs(name):
    v, blocks, layers = _trace(name)
    kernels = [p for p in _paths(v["params"]) if p.endswith("kernel")]
    assert layers == list(range(len(kernels)))  # every kernel is one rule-aware layer
    # Plain chains mark nothing; residual nets mark each block's input before its conv1.
    assert blocks == (_expected_marks(*RESNETS[name]) if name in RESNETS else [])


def test_resnet18_nsc_is_resnet18_without_shortcuts():
    v18, blocks18, _ = _trace("resnet18")
    vnsc, blocks_nsc, _ = _trace("resnet18_nsc")
    p18, pnsc = _paths(v18), _paths(vnsc)
    assert not any("shortcut" in p for p in pnsc)
    shortcut = {p for p in p18 if "shortcut" in p}
    assert {p.split("/")[1] for p in shortcut if p.startswith("params")} == {
        "stage1_block0", "stage2_block0", "stage3_block0"}
    assert {p: s for p, s in p18.items() if p not in shortcut} == pnsc
    assert [s for _, s in blocks18] == [s for _, s in blocks_nsc]


def _conv(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def _resnet_count(stage_sizes, widths, cin, classes, shortcut=True):
    n = _conv(3, cin, widths[0]) + 2 * widths[0]
    c = widths[0]
    for s, (blocks, w) in enumerate(zip(stage_sizes, widths)):
        for b in range(blocks):
            n += _conv(3, c, w) + _conv(3, w, w) + 4 * w
            if shortcut and (c != w or (s and not b)):
                n += _conv(1, c, w) + 2 * w
            c = w
    return n + c * classes + classes


def test_full_width_parameter_counts():
    def count(name, hwc=CIFAR, classes=10, **kw):
        model = models.create(name, classes, **kw)
        x = jnp.zeros((1, *hwc))
        return models.num_params(jax.eval_shape(lambda: alearn.init(model, BP(),
                                                                     jax.random.key(0), x)))
    # Known figures: ResNet-18 / ResNet-34 for CIFAR-10 (pytorch-cifar's 11,173,962 and
    # 21,282,122: option-B shortcuts, bias-free convs, BN everywhere).
    assert count("resnet18") == 11_173_962 == _resnet_count((2,) * 4, (64, 128, 256, 512), 3, 10)
    assert count("resnet34") == 21_282_122
    assert count("resnet18_nsc") == 11_173_962 - sum(
        _conv(1, c, 2 * c) + 4 * c for c in (64, 128, 256))
    assert count("resnet20") == _resnet_count((3,) * 3, (16, 32, 64), 3, 10) == 272_474
    assert count("resnet32", classes=100) == _resnet_count((5,) * 3, (16, 32, 64), 3, 100)
    # ASAP thesis-text AlexNet on CIFAR-10: 32 -(pad 2, 3x3)-> 34 -pool-> 17 -> 19 -> 10 ->
    # 12 -> 6; classifier with bias, no logit BN.
    alexnet = (_conv(3, 3, 64) + 2 * 64 + _conv(3, 64, 128) + 2 * 128 + _conv(3, 128, 256)
               + 2 * 256 + 6 * 6 * 256 * 1024 + 2 * 1024 + 1024 * 1024 + 2 * 1024 + 1024 * 10 + 10)
    assert count("alexnet_thesis") == alexnet == 10_871_370
    assert count("alexnet_thesis", hwc=MNIST) == alexnet - _conv(3, 2, 64)  # one input channel
    # The authors' code (the default): 5x5 kernels keep the size, 32 -> 16 -> 8 -> 4,
    # flatten 4096; BN on the logits instead of a classifier bias.
    authors = (_conv(5, 3, 64) + 2 * 64 + _conv(5, 64, 128) + 2 * 128 + _conv(5, 128, 256)
               + 2 * 256 + 4 * 4 * 256 * 1024 + 2 * 1024 + 1024 * 1024 + 2 * 1024 + 1024 * 10
               + 2 * 10)
    assert count("alexnet") == authors == 6_286_932
    assert count("alexnet", hwc=MNIST) == authors - _conv(5, 2, 64)  # 28 -> 14 -> 7 -> 4
    # AL thesis CNN on MNIST: 28 -> 14 -> 7, flatten 3136 -> 1280 -> 256 x 4 -> 10.
    cnn = (_conv(3, 1, 32, True) + 3 * _conv(3, 32, 32, True) + _conv(3, 32, 64, True)
           + 3 * _conv(3, 64, 64, True) + 3136 * 1280 + 1280 + 1280 * 256 + 256
           + 3 * (256 * 256 + 256) + 256 * 10 + 10)
    assert count("cnn", hwc=MNIST) == cnn
    vgg = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert count("vgg16") == sum(_conv(3, a, b) + 2 * b for a, b in zip([3] + vgg, vgg)) + 5130
    # The width multiplier scales every hidden width.
    assert count("resnet18", width_multiplier=0.5) == _resnet_count(
        (2,) * 4, (32, 64, 128, 256), 3, 10)


def test_num_params_counts_the_params_collection_only():
    model = models.create("resnet20", 10, width_multiplier=0.25)
    v = jax.eval_shape(lambda: alearn.init(model, BP(), jax.random.key(0), jnp.zeros((1, *CIFAR))))
    n = models.num_params(v)
    assert n == models.num_params(v["params"]) == _resnet_count((3,) * 3, (4, 8, 16), 3, 10)
    assert sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(v)) > n  # batch_stats


def test_registry_errors_list_valid_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet50'.*alexnet.*resnet18_nsc"):
        models.create("resnet50", 10)
    with pytest.raises(ValueError, match="unknown field.*depth.*valid:.*width_multiplier"):
        models.create("resnet18", 10, depth=50)
    with pytest.raises(ValueError, match="unknown activation 'swishy'.*elu.*relu"):
        model = models.create("mlp", 10, activation="swishy")
        model.init(jax.random.key(0), jnp.zeros((1, 4)))
    model = models.create("MLP", 10, widths=[8, 8])  # config lists become tuples
    assert model.widths == (8, 8) and hash(model)


@pytest.mark.parametrize("name", ["mlp", "cnn", "alexnet", "vgg16", "resnet20", "resnet18_nsc"])
@pytest.mark.parametrize("rule_name", ["fa", "dfa"])
def test_paper_models_pass_the_wrappers_init_checks(name, rule_name):
    """``create`` skips the wrapper's init-time trace checks (a trace per init) for the paper
    models; here they run: every parameter covered by the rule, and under DFA no layer
    output reaching two receiving points (the declared spec closes every shortcut)."""
    mult, hwc = TINY_MODELS[name]
    created = models.create(name, 7, width_multiplier=mult)
    assert not created.check
    checked = alearn.wrap(created.model, **models.wrap_spec(created.model))
    assert checked.check
    x = jnp.zeros((2, *hwc), jnp.float32)
    checked.init(jax.random.key(0), x, rule=alearn.rules.create(rule_name))
    # and a shortcut left open is caught (the check is live here)
    if rule_name == "dfa" and name == "resnet20":
        with pytest.raises(ValueError, match="shortcut|receiv"):
            alearn.wrap(created.model).init(jax.random.key(0), x, rule=alearn.rules.create("dfa"))
