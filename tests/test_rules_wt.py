"""Oracle tests for the weight-transport rules: FA, DFA, sign symmetry, KP, WM."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

import alearn
from alearn.analysis import feedback_angles
from alearn.rules import BP, create
from alearn.rules.wm import mirror_delta
from tests import _np_resnet
from tests._wt_models import LECUN, NUM_CLASSES, assert_trees_close, data, mlp, set_leaf

WT_RULES = ["fa", "dfa", "sign", "kp", "wm"]
# jitted once per (model, rule): far cheaper than op-by-op eager dispatch of the backward
_updates = jax.jit(alearn.rule_updates, static_argnums=(0, 1))


@functools.lru_cache(maxsize=None)  # one init per (rule, kind): arrays are immutable
def _setup(rule, kind, seed=0):
    model, x, y = data(kind, seed)
    variables = alearn.init(model, rule, jax.random.key(seed + 1), x)
    return model, variables, x, y


def _bp(model, variables, x, y):
    return _updates(model, BP(), variables, x, y)["params"]


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("name", WT_RULES)
def test_harness_structure_no_recompile(name, kind):
    """Updates have the tree of ``alearn.trainable``; new values never recompile the step.

    The values themselves are judged by the oracles below (NumPy ResNet, eq. 2.5 by hand,
    B := W gives BP, ±1 weights give BP).
    """
    rule = create(name)
    model, variables, x, y = _setup(rule, kind)
    upd = _updates(model, rule, variables, x, y)  # the shared jit: other tests reuse it
    compiled = _updates._cache_size()
    want = alearn.trainable(rule, variables)
    assert jax.tree_util.tree_structure(upd) == jax.tree_util.tree_structure(want)
    variables2 = jax.tree_util.tree_map(lambda v: v * 0.5, variables)
    _updates(model, rule, variables2, x + 1.0, y)
    assert _updates._cache_size() == compiled


def _np_tree(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _np_feedback(name, magnitude, feedback):
    """The matrix the oracle sends the error through, for a chain rule (BP/FA/KP/sign)."""
    if name in ("fa", "kp"):
        return lambda path, w: _np_resnet._get(feedback, path)["B"]
    if name == "sign":
        def sign(path, w):
            scale = {"unit": 1.0, "mean_abs": np.abs(w).mean(),
                     "fan_in": np.sqrt(2.0 / (w.size / w.shape[-1]))}[magnitude]
            return np.sign(w) * scale
        return sign
    return lambda path, w: w


@pytest.mark.parametrize("name, hparams", [
    ("bp", {}), ("fa", {}), ("kp", {}), ("sign", {}), ("sign", {"magnitude": "mean_abs"}),
    ("dfa", {})])
def test_resnet_updates_match_numpy_oracle(name, hparams):
    """Stem + identity block + projection block + classifier, BN in training mode: every
    parameter's update equals a hand-written NumPy backward pass (tests/_np_resnet.py).

    DFA follows eq. 2.5 exactly: at every receiver (after the stem's activation, after each
    block's relu(bn1) and on each block's output) the gradient from above is replaced by
    ``reshape(e D)``, so nothing arrives through a shortcut. BP checks the oracle itself.
    """
    rule = create(name, **hparams)
    model, x, y = _zoo("resnet")
    variables = alearn.init(model, rule, jax.random.key(0), x)
    upd = _updates(model, rule, variables, x, y)
    fb = _np_tree(variables.get("feedback", {}))
    if name == "dfa":
        # Receivers at each block input and on the last block's output (the declared spec),
        # and conv2's own D on its input (after bn1's activation): the oracle's receiving
        # points, which it reads under the ASAP authors' names. The classifier's D is
        # overridden by the receiver below it.
        assert sorted("/".join(k) for k in traverse_util.flatten_dict(fb)) == sorted(
            ["classifier/D", "stage0_block0/D", "stage0_block0/conv2/D", "stage1_block0/D",
             "stage1_block0/conv2/D", "stage1_block0/D_out"])
        assert fb["stage1_block0"]["D_out"].shape == (NUM_CLASSES, 4 * 4 * 8)
        fb = {"stem_receiver": {"D": fb["stage0_block0"]["D"]},
              "stage0_block0": {"receiver1": fb["stage0_block0"]["conv2"],
                                "receiver2": {"D": fb["stage1_block0"]["D"]}},
              "stage1_block0": {"receiver1": fb["stage1_block0"]["conv2"],
                                "receiver2": {"D": fb["stage1_block0"]["D_out"]}}}
    want = _np_resnet.updates(_np_tree(variables["params"]), fb, np.asarray(x), np.asarray(y),
                              "dfa" if name == "dfa" else "chain",
                              _np_feedback(name, getattr(rule, "magnitude", None), fb))
    got = {"/".join(k): v for k, v in traverse_util.flatten_dict(upd["params"]).items()}
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
    if name == "kp":  # ΔB = ΔW (eq. 2.7)
        for k, db in traverse_util.flatten_dict(upd["feedback"]).items():
            np.testing.assert_allclose(db, want["/".join(k[:-1]) + "/kernel"], rtol=1e-4,
                                       atol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("name", ["fa", "kp", "wm"])
def test_feedback_equal_to_kernel_gives_bp(name, kind):
    rule = create(name)
    model, variables, x, y = _setup(rule, kind)
    fb = traverse_util.flatten_dict(variables["feedback"])
    params = traverse_util.flatten_dict(variables["params"])
    assert all(not jnp.allclose(b, params[p[:-1] + ("kernel",)]) for p, b in fb.items())
    fb = {p: params[p[:-1] + ("kernel",)] for p in fb}
    variables = {**variables, "feedback": traverse_util.unflatten_dict(fb)}
    upd = _updates(model, rule, variables, x, y)
    assert_trees_close(upd["params"], _bp(model, variables, x, y))
    if name == "kp":  # B receives exactly W's update (eq. 2.7)
        for p, db in traverse_util.flatten_dict(upd["feedback"]).items():
            np.testing.assert_array_equal(
                db, traverse_util.flatten_dict(upd["params"])[p[:-1] + ("kernel",)])


def test_fa_random_feedback_differs_from_bp_below_the_top():
    rule = create("fa")
    model, variables, x, y = _setup(rule, "dense")
    upd = _updates(model, rule, variables, x, y)["params"]
    ref = _bp(model, variables, x, y)
    # the output layer's update is δ_L h^T for every rule; lower layers differ
    np.testing.assert_allclose(upd["Dense_2"]["kernel"], ref["Dense_2"]["kernel"], rtol=1e-5)
    assert not jnp.allclose(upd["Dense_0"]["kernel"], ref["Dense_0"]["kernel"], atol=1e-4)


def test_fa_updating_w_leaves_b_untouched():
    rule = create("fa")
    model, variables, x, y = _setup(rule, "dense")
    b0 = jax.tree_util.tree_map(jnp.copy, variables["feedback"])
    tx = optax.chain(rule.transform(), optax.sgd(0.5))
    tv = alearn.trainable(rule, variables)
    assert "feedback" not in tv
    state = tx.init(tv)
    for _ in range(3):
        upd = _updates(model, rule, {**variables, **tv}, x, y)
        u, state = tx.update(upd, state, tv)
        tv = optax.apply_updates(tv, u)
    variables = {**variables, **tv}
    assert_trees_close(variables["feedback"], b0, rtol=0, atol=0)
    assert not jnp.allclose(variables["params"]["Dense_0"]["kernel"],
                            variables["feedback"]["Dense_0"]["B"])


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_dfa_output_feedback_equal_to_w_out_gives_bp(kind):
    rule = create("dfa")
    if kind == "dense":
        model, x, y = mlp(widths=(16,)), *data("dense")[1:]
        last = "Dense_1"
    else:
        model, x, y = data("conv")
        last = "Dense_0"
        model = _OneConv()
    variables = alearn.init(model, rule, jax.random.key(3), x)
    w_out = variables["params"][last]["kernel"]
    assert variables["feedback"][last]["D"].shape == w_out.T.shape
    variables = {**variables,
                 "feedback": set_leaf(variables["feedback"], (last, "D"), w_out.T)}
    upd = _updates(model, rule, variables, x, y)
    assert_trees_close(upd["params"], _bp(model, variables, x, y))


def _one_conv_cls():
    import flax.linen as nn

    from alearn._layers import Conv, Dense, Tape

    class OneConv(nn.Module):
        @nn.compact
        def __call__(self, x, *, rule=BP(), train=False):
            tape = Tape(rule, x.shape[0], NUM_CLASSES)
            x = nn.relu(Conv(4, (3, 3), strides=(2, 2), kernel_init=LECUN)(x, tape))
            x = x.reshape(x.shape[0], -1)
            return tape.finish(Dense(NUM_CLASSES)(x, tape))

    return OneConv


_OneConv = _one_conv_cls()


def test_dfa_matches_hand_computed_eq_2_5():
    """δ_l = φ'(a_l) ⊙ (δ_L D_{l+1}), ΔW_l = h_{l-1}ᵀ δ_l, with no W_{l+1}ᵀ δ anywhere."""
    rule = create("dfa")
    model, variables, x, y = _setup(rule, "dense")
    p, d = variables["params"], variables["feedback"]
    a1 = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    h1 = jax.nn.relu(a1)
    a2 = h1 @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    h2 = jax.nn.relu(a2)
    logits = h2 @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    err = (jax.nn.softmax(logits) - jax.nn.one_hot(y, NUM_CLASSES)) / x.shape[0]
    d2 = (a2 > 0) * (err @ d["Dense_2"]["D"])
    d1 = (a1 > 0) * (err @ d["Dense_1"]["D"])
    upd = _updates(model, rule, variables, x, y)["params"]
    np.testing.assert_allclose(upd["Dense_2"]["kernel"], h2.T @ err, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(upd["Dense_1"]["kernel"], h1.T @ d2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(upd["Dense_0"]["kernel"], x.T @ d1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(upd["Dense_0"]["bias"], d1.sum(0), rtol=1e-4, atol=1e-6)
    # the backward keeps (x, D) alive, never the kernel
    kernel = p["Dense_1"]["kernel"]
    res = rule.residuals(None, h1, kernel, d["Dense_1"], None)
    assert all(r is not kernel for r in res)


def test_dfa_conv_feedback_projects_to_flattened_input():
    rule = create("dfa")
    model, variables, x, y = _setup(rule, "conv")
    assert variables["feedback"]["Conv_0"]["D"].shape == (NUM_CLASSES, 6 * 6 * 3)
    assert variables["feedback"]["Conv_1"]["D"].shape == (NUM_CLASSES, 6 * 6 * 4)
    assert variables["feedback"]["Dense_0"]["D"].shape == (NUM_CLASSES, 3 * 3 * 6)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("magnitude", ["unit", "mean_abs"])
def test_sign_symmetry_on_unit_weights_gives_bp(kind, magnitude):
    rule = create("sign", magnitude=magnitude)
    model, variables, x, y = _setup(rule, kind)
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.where(v >= 0, 1.0, -1.0) if p[-1].key == "kernel" else v,
        variables["params"])
    variables = {**variables, "params": params}
    x = x * 0.05  # keep ±1-weight activations moderate
    assert_trees_close(_updates(model, rule, variables, x, y)["params"],
                       _bp(model, variables, x, y), rtol=1e-5, atol=1e-5)
    # and on ordinary weights it is not BP
    _, v0, _, _ = _setup(rule, kind)
    assert not jnp.allclose(_updates(model, rule, v0, x, y)["params"][
        "Conv_0" if kind == "conv" else "Dense_0"]["kernel"],
        _bp(model, v0, x, y)["Conv_0" if kind == "conv" else "Dense_0"]["kernel"], atol=1e-5)


@pytest.mark.parametrize("lam", [0.1, 0.3])
def test_kp_difference_decays_as_one_minus_lambda_to_the_t(lam):
    rule = create("kp", weight_decay=lam, decay_kernel=True)  # no base weight decay here
    model, variables, x, y = _setup(rule, "dense")
    tx = optax.chain(rule.transform(), optax.sgd(1.0))
    tv = alearn.trainable(rule, variables)
    state = tx.init(tv)

    def gap(tv):
        p = traverse_util.flatten_dict(tv["params"])
        return {k[:-1]: float(jnp.linalg.norm(p[k[:-1] + ("kernel",)] - b))
                for k, b in traverse_util.flatten_dict(tv["feedback"]).items()}

    g0 = gap(tv)
    steps = 6
    for t in range(steps):
        upd = _updates(model, rule, {**variables, **tv}, x + t, y)
        u, state = tx.update(upd, state, tv)
        tv = optax.apply_updates(tv, u)
    for k, g in gap(tv).items():
        np.testing.assert_allclose(g, (1 - lam) ** steps * g0[k], rtol=1e-4)
    # biases are left to the base optimizer: no λ on them
    assert "bias" not in traverse_util.flatten_dict(tv["feedback"])


@pytest.mark.parametrize("shape", [(16, 12), (3, 3, 4, 6)])
def test_wm_expected_update_is_proportional_to_w(shape):
    kw, kb, kn = jax.random.split(jax.random.key(7), 3)
    w = jax.random.normal(kw, shape)
    b = jax.random.normal(kb, shape)
    d = mirror_delta(w, b, kn, noise_std=0.5, lr=1.0, decay=0.0, batch=20000)
    cos = float(jnp.vdot(d, w) / (jnp.linalg.norm(d) * jnp.linalg.norm(w)))
    assert cos > 0.99
    # magnitude: E[ΔB] = η σ² W
    np.testing.assert_allclose(float(jnp.vdot(d, w) / jnp.vdot(w, w)), 0.25, rtol=0.05)


def test_wm_mirror_steps_align_b_with_w():
    rule = create("wm", mirror_steps=40, mirror_batch=256)
    model, variables, x, y = _setup(rule, "conv")
    angles0 = feedback_angles(rule, variables)
    fb = jax.jit(rule.mirror)(variables["params"], variables["feedback"], jax.random.key(0))
    angles = feedback_angles(rule, {**variables, "feedback": fb})
    assert set(angles) == {"b_vs_w/Conv_0", "b_vs_w/Conv_1", "b_vs_w/Dense_0"}
    for k in angles:
        assert float(angles0[k]) > 60 and float(angles[k]) < 15, (k, angles0[k], angles[k])
    # WM's ordinary step trains no feedback (B changes only in mirror mode)
    assert "feedback" not in _updates(model, rule, variables, x, y)


@pytest.mark.parametrize("name, hparams, needle", [
    ("kp", {"weight_decay": -0.1}, "weight_decay=-0.1"),
    ("wm", {"noise_std": 0.0}, "noise_std=0.0"),
    ("wm", {"mirror_decay": -1.0}, "mirror_decay=-1.0"),
    ("wm", {"mirror_steps": 0}, "mirror_steps=0"),
    ("fa", {"feedback_scale": 0.0}, "feedback_scale=0.0"),
    ("dfa", {"feedback_init": "zeros"}, "feedback_init='zeros'"),
    ("fa", {"feedback_init": "uniform"}, "normal_fan_in, uniform_unit"),
    ("sign", {"magnitude": "abs"}, "magnitude='abs'"),
    ("sign", {"magnitude": "abs"}, "fan_in, mean_abs, unit"),
    ("fa", {"paper_code_fa_conv": 1}, "paper_code_fa_conv=1 must be a bool"),
    ("kp", {"paper_code_fa_conv": True}, "switch of rule 'fa' only"),
    ("wm", {"paper_code_fa_conv": True}, "switch of rule 'fa' only"),
    ("fa", {"lr": 0.1}, "unknown hyperparameter(s) lr"),
    ("kp", {"lambda_": 0.1}, "unknown hyperparameter(s) lambda_"),
])
def test_bad_hyperparameters_fail_clearly(name, hparams, needle):
    with pytest.raises(ValueError) as err:
        create(name, **hparams)
    assert needle in str(err.value)


def test_paper_defaults():
    assert create("kp").weight_decay == 5e-4
    assert create("kp").decay_kernel is False  # the base optimizer decays W (papers' SGD)
    assert create("fa").feedback_init == "he_normal"
    assert create("dfa").feedback_init == "normal_fan_in"  # the authors' N(0, 1/classes)
    assert create("sign").magnitude == "fan_in"  # trains a LeNet at lr 0.01; unit does not
    assert create("fa").paper_code_fa_conv is False


def test_authors_feedback_inits_by_name():
    """uniform_unit = U(-1, 1) whatever the fan (Linear_FA); DFA's normal_fan_in D =
    N(0, 1/classes) (Feedback_Receiver), untruncated."""
    model, x, y = mlp(widths=(300,)), *data("dense")[1:]
    fa = alearn.init(model, create("fa", feedback_init="uniform_unit"), jax.random.key(0), x)
    b = np.asarray(fa["feedback"]["Dense_0"]["B"])
    assert b.min() >= -1 and b.max() <= 1 and b.min() < -0.99 and b.max() > 0.99
    np.testing.assert_allclose(b.var(), 1 / 3, rtol=0.05)
    dfa = alearn.init(model, create("dfa"), jax.random.key(0), x)
    d = np.asarray(dfa["feedback"]["Dense_1"]["D"])  # (classes, 300)
    assert d.shape == (NUM_CLASSES, 300)
    np.testing.assert_allclose(d.std(), np.sqrt(1 / NUM_CLASSES), rtol=0.05)
    assert np.abs(d).max() > 2.2 * np.sqrt(1 / NUM_CLASSES)  # not truncated at 2 std


def test_paper_code_fa_conv_sends_conv_errors_through_w():
    """The authors' conv aliasing: convs get BP's error (W), dense layers keep B."""
    model, x, y = data("conv")
    rule = create("fa", paper_code_fa_conv=True)
    variables = alearn.init(model, rule, jax.random.key(1), x)
    upd = _updates(model, rule, variables, x, y)["params"]
    # dense B := W makes the whole net BP (the convs already use W) ...
    fb = set_leaf(variables["feedback"], ("Dense_0", "B"), variables["params"]["Dense_0"]["kernel"])
    assert_trees_close(_updates(model, rule, {**variables, "feedback": fb}, x, y)["params"],
                       _bp(model, variables, x, y), rtol=1e-5, atol=1e-6)
    # ... and with the random dense B it equals FA whose conv B are set to W
    fb = set_leaf(variables["feedback"], ("Conv_1", "B"), variables["params"]["Conv_1"]["kernel"])
    fb = set_leaf(fb, ("Conv_0", "B"), variables["params"]["Conv_0"]["kernel"])
    assert_trees_close(upd, _updates(model, create("fa"), {**variables, "feedback": fb}, x, y)[
        "params"], rtol=1e-5, atol=1e-6)
    assert not jnp.allclose(upd["Conv_0"]["kernel"], _updates(
        model, create("fa"), variables, x, y)["params"]["Conv_0"]["kernel"], atol=1e-5)


@pytest.mark.parametrize("hparams, wd, mask, needle", [
    ({"decay_kernel": True, "weight_decay": 5e-4}, 5e-4, "params", "decay W twice"),
    ({"decay_kernel": False, "weight_decay": 5e-4}, 5e-4, "all", "decay B twice"),
    ({"decay_kernel": False, "weight_decay": 5e-4}, 0.0, "params", "W − B does not shrink"),
    ({"decay_kernel": False, "weight_decay": 1e-3}, 5e-4, "params",
     "W decays with λ=0.0005 but B with λ=0.001"),
    ({"decay_kernel": False}, 5e-4, "weights",
     "unknown weight_decay_mask 'weights'; choose one of: params, kernels, conv_kernels, all"),
])
def test_kp_weight_decay_combinations_rejected_in_configs(hparams, wd, mask, needle):
    from experiments.configs import default

    from alearn.train import validate_config

    config = default.get_config("kp")
    config.rule_hparams.update(hparams)
    config.weight_decay, config.optimizer = wd, "sgd"
    config.weight_decay_mask = mask
    with pytest.raises(ValueError) as err:
        validate_config(config)
    assert needle in str(err.value)


@pytest.mark.parametrize("hparams, wd, mask, optimizer", [
    ({"decay_kernel": False, "weight_decay": 5e-4}, 5e-4, "params", "sgd"),  # papers: SGD W, KP B
    ({"decay_kernel": True, "weight_decay": 5e-4}, 0.0, "params", "sgd"),  # KP decays W and B
    ({"decay_kernel": False, "weight_decay": 0.0}, 5e-4, "all", "sgd"),  # authors' SGD: W and B
    ({}, 0.0, "params", "adam"),  # default.py:kp (Adam): no decay, W − B constant
    ({"weight_decay": 0.0}, 5e-4, "all", "adamw"),  # AdamW's decoupled decay on W and B
])
def test_kp_safe_weight_decay_combinations_pass(hparams, wd, mask, optimizer):
    from experiments.configs import default

    from alearn.train import validate_config

    config = default.get_config("kp")
    config.rule_hparams.update(hparams)
    config.weight_decay, config.weight_decay_mask = wd, mask
    config.optimizer = optimizer
    validate_config(config)


def _zoo(name):
    """Tiny versions of the library's conv models (BatchNorm, residual blocks, pooling)."""
    if name == "resnet":
        model = alearn.models.create("resnet18", NUM_CLASSES, stage_sizes=(1, 1), widths=(4, 8))
        shape = (4, 8, 8, 3)
    elif name == "resnet_nsc":
        model = alearn.models.create("resnet18_nsc", NUM_CLASSES, stage_sizes=(1, 1),
                                     widths=(4, 8))
        shape = (4, 8, 8, 3)
    else:
        model = alearn.models.create("alexnet", NUM_CLASSES, conv_widths=(4, 4, 8),
                                     dense_widths=(16, 16))
        shape = (4, 12, 12, 1)
    kx, ky = jax.random.split(jax.random.key(5))
    return model, jax.random.normal(kx, shape), jax.random.randint(ky, (4,), 0, NUM_CLASSES)


@pytest.mark.parametrize("name, zoo", [("fa", "resnet"), ("wm", "resnet_nsc"),
                                       ("kp", "alexnet")])
def test_library_models_feedback_equal_to_kernel_gives_bp(name, zoo):
    """FA/KP/WM with B := W equal BP on the library's conv models (dfa and sign: the NumPy
    ResNet oracle above)."""
    rule = create(name)
    model, x, y = _zoo(zoo)
    variables = alearn.init(model, rule, jax.random.key(0), x)
    p = traverse_util.flatten_dict(variables["params"])
    fb = {k: p[k[:-1] + ("kernel",)] for k in traverse_util.flatten_dict(variables["feedback"])}
    variables = {**variables, "feedback": traverse_util.unflatten_dict(fb)}
    assert_trees_close(_updates(model, rule, variables, x, y)["params"],
                       _bp(model, variables, x, y), rtol=1e-4, atol=1e-5)
