"""Oracles for Forward Alignment and the activation-sharing rules (AS, ASAP, ASFP)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _as_models import TinyCNN, TinyResNet

import alearn
from alearn import rules
from alearn.layers import ConvOp
from alearn.models import MLP
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
    """Every feedback leaf := its layer's kernel (B = W, or C = W for FoA)."""
    def put(params, feedback):
        return {k: (put(params[k], feedback[k]) if isinstance(feedback[k], dict)
                    else params["kernel"]) for k in feedback}
    return {**variables, "feedback": put(variables["params"], variables["feedback"])}


def test_as_k1_equals_bp_dense_and_conv():
    for model, x in ((MLP(num_classes=3, widths=(8, 8, 8)), X_MLP), (TinyCNN(), X_IMG)):
        y = Y[: x.shape[0]]
        v = _init(model, rules.BP(), KEY, x)
        ub = _updates(model, rules.BP(), v, x, y)
        ua = _updates(model, rules.create("as", k=1), v, x, y)
        jax.tree.map(_close, ub, ua)


def test_as_k2_differs_from_bp_only_inside_groups():
    model = MLP(num_classes=3, widths=(8, 8, 8))  # layers 0 | 1 2 | 3
    v = _init(model, rules.BP(), KEY, X_MLP)
    ub = _updates(model, rules.BP(), v, X_MLP, Y)["params"]
    ua = _updates(model, rules.create("as", k=2), v, X_MLP, Y)["params"]
    for name in ("Dense_0", "Dense_1", "Dense_3"):
        _close(ub[name]["kernel"], ua[name]["kernel"])
    assert float(jnp.abs(ub["Dense_2"]["kernel"] - ua["Dense_2"]["kernel"]).max()) > 1e-3


@pytest.mark.parametrize("model,x", [(MLP(num_classes=3, widths=(8, 8, 8)), X_MLP),
                                     (TinyCNN(), X_IMG)])
def test_asap_k1_with_b_equal_w_is_bp_except_frozen_first_layer(model, x):
    y = Y[: x.shape[0]]
    rule = rules.create("asap", k=1, decay=0.0)
    v = _copy_kernels_to(_init(model, rule, KEY, x))
    ub = _updates(model, rules.BP(), v, x, y)["params"]
    ua = _updates(model, rule, v, x, y)
    first = sorted(ua["params"])[0]  # Conv_0 / Dense_0: the first rule-aware layer
    assert float(jnp.abs(ua["params"][first]["kernel"]).max()) == 0.0
    assert float(jnp.abs(ua["feedback"][first]["B"]).max()) == 0.0
    for name in ua["params"]:
        if name != first:
            jax.tree.map(_close, ub[name], ua["params"][name])
            _close(ua["feedback"][name]["B"], ua["params"][name]["kernel"])
    # the transform freezes the whole first module (bias too)
    tv = alearn.trainable(rule, v)
    out, _ = jax.jit(rule.transform().update)(ua, rule.transform().init(tv), tv)
    assert all(float(jnp.abs(a).max()) == 0.0 for a in jax.tree.leaves(out["params"][first]))


def test_share_dense_false_gives_dense_layers_their_own_input():
    rule = rules.create("asap", k=4, decay=0.0, share_dense=False)
    model = TinyCNN()  # conv0 | conv1 conv2 | dense0, dense1 (own inputs)
    v = _copy_kernels_to(_init(model, rule, KEY, X_IMG))
    ub = _updates(model, rules.BP(), v, X_IMG, Y[:4])["params"]
    ua = _updates(model, rule, v, X_IMG, Y[:4])["params"]
    for name in ("Dense_0", "Dense_1", "Conv_1"):
        jax.tree.map(_close, ub[name], ua[name])
    assert float(jnp.abs(ub["Conv_2"]["kernel"] - ua["Conv_2"]["kernel"]).max()) > 1e-4


@jax.jit
def _stem_output(v, x):
    stem = v["params"]["Conv_0"]
    return jax.nn.relu(ConvOp((4, 8, 8, 3), (3, 3, 3, 4)).apply(x, stem["kernel"]) + stem["bias"])


@functools.partial(jax.jit, static_argnums=(0,))
def _block_grads(rule, v, probe):
    model = TinyResNet()
    tv = alearn.trainable(rule, v)
    rest = {k: w for k, w in v.items() if k not in tv}

    def loss(tv, probe):
        out = model.apply({**rest, **tv}, X_IMG, rule=rule, probe=probe)
        return alearn.cross_entropy(out, Y[:4])

    return jax.grad(loss, argnums=(0, 1))(tv, probe)


def test_asap_residual_block_update_is_delta_times_block_input():
    """Eq. 5.3: every layer of a residual block gets δ h_sharedᵀ, h_shared = block input."""
    model, rule = TinyResNet(), rules.create("asap", k=2, decay=0.0)
    v = _copy_kernels_to(_init(model, rule, KEY, X_IMG))  # B = W: δ is BP's δ
    probe = jnp.zeros((4, 8, 8, 4))
    (g_bp, delta) = _block_grads(rules.BP(), v, probe)
    (g_as, _) = _block_grads(rule, v, probe)
    h_block = _stem_output(v, X_IMG)
    op = ConvOp((4, 8, 8, 4), (3, 3, 4, 4), padding="SAME")
    _close(g_as["params"]["Conv_2"]["kernel"], op.weight_grad(h_block, delta), 1e-4)
    _close(g_as["feedback"]["Conv_2"]["B"], g_as["params"]["Conv_2"]["kernel"])
    # conv1 of the block has the block input as its own input: exact BP update
    _close(g_as["params"]["Conv_1"]["kernel"], g_bp["params"]["Conv_1"]["kernel"], 1e-4)
    assert float(jnp.abs(g_as["params"]["Conv_2"]["kernel"]
                         - g_bp["params"]["Conv_2"]["kernel"]).max()) > 1e-4


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
        d0 = tv0["params"][name]["kernel"] - tv0["feedback"][name]["B"]
        dt = tv["params"][name]["kernel"] - fb["B"]
        if name == "Conv_0":
            jax.tree.map(lambda a, b: _close(a, b, 0), tv["params"][name], tv0["params"][name])
            _close(fb["B"], tv0["feedback"][name]["B"], 0)
        else:
            _close(dt, (1 - lam) ** steps * d0, 1e-4)
            assert float(jnp.abs(tv["params"][name]["kernel"]
                                 - tv0["params"][name]["kernel"]).max()) > 1e-3


def test_asfp_updates_w_with_own_input_and_b_with_shared():
    model = MLP(num_classes=3, widths=(8, 8, 8))
    rule = rules.create("asfp", k=2, decay=0.0)
    v = _copy_kernels_to(_init(model, rule, KEY, X_MLP))
    ub = _updates(model, rules.BP(), v, X_MLP, Y)["params"]
    ua = _updates(model, rules.create("asap", k=2, decay=0.0), v, X_MLP, Y)
    uf = _updates(model, rule, v, X_MLP, Y)
    for name in ("Dense_1", "Dense_2", "Dense_3"):
        _close(uf["params"][name]["kernel"], ub[name]["kernel"])
        _close(uf["feedback"][name]["B"], ua["params"][name]["kernel"])


@pytest.mark.parametrize("name,hp", [("foa", {}), ("asap", {"k": 4, "match": 3}),
                                     ("asfp_lc", {"match": 2})])
def test_finite_structure_preserving_no_recompile(name, hp):
    # two blocks, the second with a stride-2 projection: shapes change (dimension matching)
    model, rule = TinyResNet(widths=(4, 8), strides=(1, 2)), rules.create(name, **hp)
    v = _init(model, rule, KEY, X_IMG)
    traces = []

    @jax.jit
    def f(v, x, y):
        traces.append(1)
        return alearn.rule_updates(model, rule, v, x, y)

    u1 = f(v, X_IMG, Y[:4])
    u2 = f(v, X_IMG + 1.0, Y[:4])
    assert len(traces) == 1
    assert jax.tree.structure(u1) == jax.tree.structure(alearn.trainable(rule, v))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves((u1, u2)))


def test_bad_hyperparameters_name_the_choices():
    with pytest.raises(ValueError, match="match=7"):
        rules.create("asap", match=7)
    with pytest.raises(ValueError, match="k=0"):
        rules.create("as", k=0)


def test_asfp_lc_local_classifier_gets_its_own_cross_entropy_error():
    model = MLP(num_classes=3, widths=(8, 8, 8))  # groups 0 | 1 2 | 3: LCs at layers 1, 3
    rule = rules.create("asfp_lc", k=2, decay=0.0)
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
    _close(out, model.apply(v, X_MLP, rule=rules.create("asfp", k=2)))
    u0 = _updates(model, rules.create("asfp_lc", k=2, decay=0.0, lc_weight=0.0), v, X_MLP, Y)
    uf = _updates(model, rules.create("asfp", k=2, decay=0.0),
                  {**v, "feedback": {k: {"B": f["B"]} for k, f in v["feedback"].items()}},
                  X_MLP, Y)
    jax.tree.map(_close, u0["params"], uf["params"])
    # with the local loss, layers below the classifier see an extra error
    assert float(jnp.abs(u["params"]["Dense_1"]["kernel"]
                         - uf["params"]["Dense_1"]["kernel"]).max()) > 1e-4
