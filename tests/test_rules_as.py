"""Oracles for Forward Alignment and the activation-sharing rules (AS, ASAP, ASFP)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _as_models import TinyCNN, TinyResNet

import alearn
from alearn import rules
from _paper_models import MLP
from alearn.rules import foa as foa_lib

KEY = jax.random.key(0)
X_MLP = jax.random.normal(jax.random.key(1), (6, 8))
X_IMG = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
Y = jnp.arange(6) % 3
# jitted once per (model, rule): eager op-by-op dispatch is slower than compiling here
_updates = jax.jit(alearn.rule_updates, static_argnums=(0, 1))
_init = jax.jit(alearn.init, static_argnums=(0, 1))


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _copy_kernels_to(variables):
    """Every feedback weight (B, B_fixed, FoA's C) := its layer's kernel; markers kept."""
    def put(params, feedback):
        return {k: (put(params[k], feedback[k]) if isinstance(feedback[k], dict)
                    else params["kernel"] if k in ("B", "B_fixed", "C") else feedback[k])
                for k in feedback}
    return {**variables, "feedback": put(variables["params"], variables["feedback"])}


def test_as_k1_equals_bp_dense_and_conv():
    for model, x in ((MLP(num_classes=3, widths=(8, 8, 8)), X_MLP), (TinyCNN(), X_IMG)):
        y = Y[: x.shape[0]]
        v = _init(model, rules.BP(), KEY, x)
        ub = _updates(model, rules.BP(), v, x, y)
        ua = _updates(model, rules.create("as", k=1, grouping="block_input"), v, x, y)
        jax.tree.map(_close, ub, ua)


def test_as_k2_differs_from_bp_only_inside_groups():
    model = MLP(num_classes=3, widths=(8, 8, 8))  # layers 0 | 1 2 | 3
    v = _init(model, rules.BP(), KEY, X_MLP)
    ub = _updates(model, rules.BP(), v, X_MLP, Y)["params"]
    ua = _updates(model, rules.create("as", k=2, grouping="block_input", dense="shared"), v,
                  X_MLP, Y)["params"]
    for name in ("Dense_0", "Dense_1", "Dense_3"):
        _close(ub[name]["kernel"], ua[name]["kernel"])
    assert float(jnp.abs(ub["Dense_2"]["kernel"] - ua["Dense_2"]["kernel"]).max()) > 1e-3


@pytest.mark.parametrize("model,x", [(MLP(num_classes=3, widths=(8, 8, 8)), X_MLP),
                                     (TinyCNN(), X_IMG)])
def test_asap_k1_with_b_equal_w_is_bp_except_frozen_first_layer(model, x):
    y = Y[: x.shape[0]]
    rule = rules.create("asap", k=1, decay=0.0, dense="own_input")
    v = _copy_kernels_to(_init(model, rule, KEY, x))
    ub = _updates(model, rules.BP(), v, x, y)["params"]
    ua = _updates(model, rule, v, x, y)
    first = sorted(ua["params"])[0]  # Conv_0 / Dense_0: the first rule-aware layer
    assert float(jnp.abs(ua["params"][first]["kernel"]).max()) == 0.0
    assert set(ua["feedback"][first]) == {"frozen"}  # declared frozen: no B at all
    for name in ua["params"]:
        if name != first:
            jax.tree.map(_close, ub[name], ua["params"][name])
            _close(ua["feedback"][name]["B"], ua["params"][name]["kernel"])
    # the transform freezes the whole first module (bias too)
    tv = alearn.trainable(rule, v)
    out, _ = jax.jit(rule.transform().update)(ua, rule.transform().init(tv), tv)
    assert all(float(jnp.abs(a).max()) == 0.0 for a in jax.tree.leaves(out["params"][first]))


def test_dead_relu_layer_is_not_frozen():
    """Freezing is by declared position: a layer whose kernel update is exactly zero
    (its input is a dead ReLU layer) keeps its bias update and its decay."""
    lam = 0.1
    model = MLP(num_classes=3, widths=(8, 8, 8))
    rule = rules.create("asap", k=1, decay=lam, dense="own_input")
    v = _init(model, rule, KEY, X_MLP)
    p = {**v["params"], "Dense_1": {**v["params"]["Dense_1"],
                                    "bias": jnp.full((8,), -100.0)},  # dead: output 0
         "Dense_2": {**v["params"]["Dense_2"], "bias": jnp.ones((8,))}}  # active
    v = {**v, "params": p}
    u = _updates(model, rule, v, X_MLP, Y)
    assert float(jnp.abs(u["params"]["Dense_2"]["kernel"]).max()) == 0.0  # input is zero
    # its bias update is BP's (own input, B = own B): δ of Dense_2 summed over the batch
    h3 = jax.nn.relu(jnp.ones((6, 8)))  # Dense_2's output: relu(0 W + 1)
    logits = h3 @ p["Dense_3"]["kernel"] + p["Dense_3"]["bias"]
    e = (jax.nn.softmax(logits) - jax.nn.one_hot(Y, 3)) / 6
    want_b = (e @ v["feedback"]["Dense_3"]["B"].T).sum(0)  # relu'(1) = 1
    _close(u["params"]["Dense_2"]["bias"], want_b)
    assert float(jnp.abs(want_b).max()) > 1e-3
    tv = alearn.trainable(rule, v)
    out, _ = rule.transform().update(u, rule.transform().init(tv), tv)
    _close(out["params"]["Dense_2"]["bias"], want_b)
    _close(out["params"]["Dense_2"]["kernel"], lam * p["Dense_2"]["kernel"])
    _close(out["feedback"]["Dense_2"]["B"], lam * v["feedback"]["Dense_2"]["B"])
    assert all(float(jnp.abs(a).max()) == 0.0 for a in jax.tree.leaves(out["params"]["Dense_0"]))


@pytest.mark.parametrize("dense", ["own_input", "fa"])
def test_dense_layers_use_their_own_input(dense):
    # k=2: the conv group {conv1, conv2} is full, so under dense="shared" dense0 would start
    # a group and dense1 share dense0's input; here each keeps its own (k=4 would train as
    # k=2 on this net and is refused: test_k_that_cannot_apply_is_refused)
    rule = rules.create("asap", k=2, decay=0.0, dense=dense)
    model = TinyCNN()  # conv0 | conv1 conv2 | dense0, dense1 (own inputs)
    v = _copy_kernels_to(_init(model, rule, KEY, X_IMG))
    ub = _updates(model, rules.BP(), v, X_IMG, Y[:4])["params"]
    ua = _updates(model, rule, v, X_IMG, Y[:4])
    for name in ("Dense_0", "Dense_1", "Conv_1"):
        jax.tree.map(_close, ub[name], ua["params"][name])
    assert float(jnp.abs(ub["Conv_2"]["kernel"] - ua["params"]["Conv_2"]["kernel"]).max()) > 1e-4
    fb = ua["feedback"]["Dense_0"]
    if dense == "fa":  # plain FA: the fixed B gets no update
        assert set(fb) == {"B_fixed"} and float(jnp.abs(fb["B_fixed"]).max()) == 0.0
    else:  # ASAP with own input: B gets W's update
        _close(fb["B"], ua["params"]["Dense_0"]["kernel"])


def test_dense_fa_feedback_is_uniform_minus_one_one():
    v = _init(TinyCNN(), rules.create("asap"), KEY, X_IMG)
    b = np.asarray(v["feedback"]["Dense_0"]["B_fixed"])
    assert b.shape == (32, 6) and b.min() >= -1.0 and b.max() <= 1.0
    assert 0.2 < b.std() < 0.8 and b.min() < -0.5 and b.max() > 0.5  # U(-1, 1): std 0.577


def test_foa_with_c_equal_w_on_linear_net_is_bp():
    """C = W makes h̃ = h on a linear net (biases start at zero), so FoA equals BP."""
    model, rule = MLP(num_classes=3, widths=(8, 8), activation="identity"), rules.create("foa")
    v = _init(model, rule, KEY, X_MLP)
    ub = _updates(model, rules.BP(), v, X_MLP, Y)["params"]
    uc = _updates(model, rule, _copy_kernels_to(v), X_MLP, Y)["params"]
    jax.tree.map(_close, ub, uc)
    # C = I and W_0 = I (equal widths): layer 2 equals BP, layer 3 does not (h̃_2 = x ≠ W_1 x)
    eye = jnp.eye(8)
    v2 = {**v, "params": {**v["params"], "Dense_0": {**v["params"]["Dense_0"], "kernel": eye}},
          "feedback": {"Dense_0": {"C": eye}, "Dense_1": {"C": eye},
                       "Dense_2": {"C": jnp.eye(8, 3)}}}
    ub = _updates(model, rules.BP(), v2, X_MLP, Y)["params"]
    ui = _updates(model, rule, v2, X_MLP, Y)["params"]
    _close(ub["Dense_1"]["kernel"], ui["Dense_1"]["kernel"])
    assert float(jnp.abs(ub["Dense_2"]["kernel"] - ui["Dense_2"]["kernel"]).max()) > 1e-3
    angles = foa_lib.alignment_angles(_copy_kernels_to(v))
    assert set(angles) == {"Dense_0", "Dense_1", "Dense_2"}
    assert max(float(a) for a in angles.values()) < 0.1


def test_asap_w_minus_b_shrinks_geometrically_and_first_layer_is_frozen():
    lam, steps = 0.1, 3
    model, rule = TinyResNet(), rules.create("asap", k=2, decay=lam)
    v = _init(model, rule, KEY, X_IMG)
    tv0 = alearn.trainable(rule, v)
    opt = optax.chain(rule.transform(), optax.sgd(1.0))
    state = opt.init(tv0)

    @jax.jit
    def step(tv, state):
        upd = alearn.rule_updates(model, rule, {**v, **tv}, X_IMG, Y[:4])
        upd, state = opt.update(upd, state, tv)
        return optax.apply_updates(tv, upd), state

    tv = tv0
    for _ in range(steps):
        tv, state = step(tv, state)
    for name, fb in tv["feedback"].items():
        moved = float(jnp.abs(tv["params"][name]["kernel"] - tv0["params"][name]["kernel"]).max())
        if name == "Conv_0":  # declared frozen: nothing moves
            assert set(fb) == {"frozen"}
            jax.tree.map(lambda a, b: _close(a, b, 0), tv["params"][name], tv0["params"][name])
        elif name == "Dense_0":  # plain FA: B fixed, W trained
            assert set(fb) == {"B_fixed"} and moved > 1e-3
            _close(fb["B_fixed"], tv0["feedback"][name]["B_fixed"], 0)
        else:
            d0 = tv0["params"][name]["kernel"] - tv0["feedback"][name]["B"]
            _close(tv["params"][name]["kernel"] - fb["B"], (1 - lam) ** steps * d0, 1e-4)
            assert moved > 1e-3


def test_asfp_updates_w_with_own_input_and_b_with_shared():
    model = MLP(num_classes=3, widths=(8, 8, 8))
    rule = rules.create("asfp", k=2, decay=0.0, dense="shared")
    v = _copy_kernels_to(_init(model, rule, KEY, X_MLP))
    ub = _updates(model, rules.BP(), v, X_MLP, Y)["params"]
    ua = _updates(model, rules.create("asap", k=2, decay=0.0, dense="shared"), v, X_MLP, Y)
    uf = _updates(model, rule, v, X_MLP, Y)
    for name in ("Dense_1", "Dense_2", "Dense_3"):
        _close(uf["params"][name]["kernel"], ub[name]["kernel"])
        _close(uf["feedback"][name]["B"], ua["params"][name]["kernel"])


def test_bad_hyperparameters_name_the_choices():
    with pytest.raises(ValueError, match="match=7"):
        rules.create("asap", match=7)
    with pytest.raises(ValueError, match="k=0"):
        rules.create("as", k=0)
    with pytest.raises(ValueError, match="grouping='thesis'.*authors_code.*block_input"):
        rules.create("asap", grouping="thesis")
    with pytest.raises(ValueError, match="dense='bogus'.*fa.*own_input.*shared"):
        rules.create("asfp", dense="bogus")
    with pytest.raises(ValueError, match="dense='fa'.*own_input.*shared"):
        rules.create("as", dense="fa")  # AS has no feedback weights for FA


def test_asfp_lc_local_classifier_gets_its_own_cross_entropy_error():
    model = MLP(num_classes=3, widths=(8, 8, 8))  # groups 0 | 1 2 | 3: LCs at layers 1, 3
    rule = rules.create("asfp_lc", k=2, decay=0.0, dense="shared")
    v = _init(model, rule, KEY, X_MLP)
    u = _updates(model, rule, v, X_MLP, Y)
    # the classifier at layer 3 reads that layer's input h (= relu of layer 2's output)
    h = X_MLP
    for name in ("Dense_0", "Dense_1", "Dense_2"):
        h = jax.nn.relu(h @ v["params"][name]["kernel"] + v["params"][name]["bias"])
    lc = v["feedback"]["Dense_3"]["LC"]
    want = jax.grad(lambda w: alearn.cross_entropy(h @ w, Y))(lc)
    _close(u["feedback"]["Dense_3"]["LC"], want)
    assert float(jnp.abs(u["feedback"]["Dense_2"]["LC"]).max()) == 0.0  # not a group start
    # forward output unchanged; lc_weight = 0 is exactly ASFP
    out = model.apply(v, X_MLP, rule=rule)
    _close(out, model.apply(v, X_MLP, rule=rules.create("asfp", k=2, dense="shared")))
    u0 = _updates(model, rules.create("asfp_lc", k=2, decay=0.0, lc_weight=0.0, dense="shared"),
                  v, X_MLP, Y)
    uf = _updates(model, rules.create("asfp", k=2, decay=0.0, dense="shared"),
                  {**v, "feedback": {k: {n: a for n, a in f.items() if n != "LC"}
                                     for k, f in v["feedback"].items()}},
                  X_MLP, Y)
    jax.tree.map(_close, u0["params"], uf["params"])
    # with the local loss, layers below the classifier see an extra error
    assert float(jnp.abs(u["params"]["Dense_1"]["kernel"]
                         - uf["params"]["Dense_1"]["kernel"]).max()) > 1e-4


def test_asap_config_learning_rates_follow_table_5_1():
    from experiments.configs import asap as asap_config
    table_5_1 = {("mnist", "alexnet"): 1e-4, ("svhn", "alexnet"): 1e-4,
                 ("svhn", "resnet18_nsc"): 3e-3, ("svhn", "resnet18"): 3e-3,
                 ("cifar10", "resnet18"): 3e-2, ("cifar10", "resnet34"): 3e-2,
                 ("cifar100", "resnet18_nsc"): 3e-3, ("tiny_imagenet", "resnet18"): 3e-2}
    for (data, model), lr in table_5_1.items():
        for rule in ("asap", "asfp"):
            assert asap_config.get_config(f"{rule},{model},{data}").learning_rate == lr
