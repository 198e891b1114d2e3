"""Conv-net oracles for AS, ASAP, ASFP, ASFP+LC and FoA (issue 10): residual nets, AlexNet.

Every expected update is computed here independently of the rules: a plain-JAX copy of
``_as_models.TinyResNet`` (``lax.conv``, no alearn layer) gives BP's error δ at every
layer output (a zero probe is added to each layer output; ``jax.grad`` w.r.t. the probes),
a NumPy dimension matcher (tile channels, max-pool) brings shared activations to a layer's
input shape, and a weight update is the weight-cotangent of ``lax.conv`` (``jax.vjp``) at
(activation, δ). With every learned B set to W (and a dense layer's fixed B to its W) the
rules' errors are BP's, so their updates must equal these.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _as_models import TinyResNet

import alearn
from alearn import rules

X = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
Y = jnp.arange(4) % 3
DN = ("NHWC", "HWIO", "NHWC")
# (conv1, conv2, shortcut or None, stride) of TinyResNet(widths=(4, 4, 8), strides=(1, 1, 2))
BLOCKS = (("Conv_1", "Conv_2", None, 1), ("Conv_3", "Conv_4", None, 1),
          ("Conv_5", "Conv_6", "Conv_7", 2))
STRIDE = {"Conv_0": 1, "Conv_5": 2, "Conv_7": 2}


def _conv(h, w, s=1):
    return jax.lax.conv_general_dilated(h, w, (s, s), "SAME", dimension_numbers=DN)


def _plain_forward(params, probes, blocks=BLOCKS):
    """TinyResNet by hand; returns (loss, {layer: its real input}, [block inputs])."""
    p, inputs, block_in = params, {"Conv_0": X}, []
    h = jax.nn.relu(_conv(X, p["Conv_0"]["kernel"]) + p["Conv_0"]["bias"] + probes["Conv_0"])
    for c1, c2, sc, s in blocks:
        block_in.append(h)
        inputs[c1] = h
        z = jax.nn.relu(_conv(h, p[c1]["kernel"], s) + p[c1]["bias"] + probes[c1])
        inputs[c2] = z
        z = _conv(z, p[c2]["kernel"]) + p[c2]["bias"] + probes[c2]
        short = h
        if sc is not None:
            inputs[sc] = h
            short = _conv(h, p[sc]["kernel"], s) + probes[sc]
        h = jax.nn.relu(z + short)
    f = h.mean(axis=(1, 2))
    inputs["Dense_0"] = f
    logits = f @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"] + probes["Dense_0"]
    loss = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), Y])
    return loss, (inputs, block_in)


def _bp_deltas(params, blocks=BLOCKS):
    """({layer: δ at its output}, inputs, block inputs) by plain jax.grad of the probes."""
    shapes = {}
    for c1, c2, sc, s in blocks:
        for name in (c1, c2) + ((sc,) if sc else ()):
            w = params[name]["kernel"]
            shapes[name] = (4, 8 // s, 8 // s, w.shape[-1])
    shapes["Conv_0"] = (4, 8, 8, params["Conv_0"]["kernel"].shape[-1])
    shapes["Dense_0"] = (4, 3)
    probes = {k: jnp.zeros(v) for k, v in shapes.items()}
    deltas, (inputs, block_in) = jax.grad(
        lambda pr: _plain_forward(params, pr, blocks), has_aux=True)(probes)
    return deltas, inputs, block_in


def np_match(a, target):
    """Tile channels (concatenated copies, cropped), then max-pool by an integer ratio."""
    a = np.asarray(a)
    n, h, w, c = a.shape
    if target[3] != c:
        a = np.concatenate([a] * -(-target[3] // c), axis=3)[..., :target[3]]
    r = h // target[1]
    return a.reshape(n, target[1], r, target[2], r, target[3]).max(axis=(2, 4))


def _wgrad(h, delta, w):
    """Weight-cotangent of lax.conv (stride from the output size) at (h, δ)."""
    s = h.shape[1] // delta.shape[1]
    return jax.vjp(lambda k: _conv(jnp.asarray(h), k, s), jnp.zeros_like(w))[1](delta)[0]


def _close(a, b, tol=2e-4):
    scale = max(1.0, float(np.abs(np.asarray(b)).max()))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol * scale)


def _with_b_equal_w(v):
    fb = {}
    for name, f in v.get("feedback", {}).items():
        fb[name] = {k: (v["params"][name]["kernel"] if k in ("B", "B_fixed") else a)
                    for k, a in f.items()}
    return {**v, "feedback": fb}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _updates(model, rule, v):
    return alearn.rule_updates(model, rule, v, X, Y)


def _shared_map(grouping, k, xs):
    """{layer: shared activation} as the authors' code (or alearn's first reading) does."""
    if grouping == "block_input":
        return {name: xs[b] for b, blk in enumerate(BLOCKS) for name in blk[:3] if name}
    present, out, prev = [], {}, xs[0]
    for b, (c1, c2, sc, _) in enumerate(BLOCKS):
        cur = xs[b] if b % (k // 2) == 0 else prev
        out[c1] = prev
        out[c2] = cur
        if sc:
            out[sc] = prev
        prev = cur
    return out


CASES = [("authors_code", 2), ("authors_code", 4), ("block_input", 2)]


def _setup(name, grouping, k, **hp):
    model = TinyResNet()
    rule = rules.create(name, k=k, grouping=grouping, **hp)
    v = _with_b_equal_w(alearn.init(model, rule, jax.random.key(0), X))
    deltas, inputs, xs = _bp_deltas(v["params"])
    shared = _shared_map(grouping, k, xs)
    return model, rule, v, deltas, inputs, shared


def _expected_shared_update(v, deltas, shared, name):
    w = v["params"][name]["kernel"]
    h = np_match(shared[name], (4, *_input_hw(name), w.shape[2]))
    return _wgrad(h, deltas[name], w)


def _input_hw(name):
    return (4, 4) if name == "Conv_6" else (8, 8)


@pytest.mark.parametrize("grouping,k", CASES)
def test_asap_residual_updates_follow_the_grouping(grouping, k):
    """Eq. 5.3 and the authors' map: ΔW = ΔB = (weight-cotangent of conv at (h̃, δ))."""
    model, rule, v, deltas, inputs, shared = _setup("asap", grouping, k, decay=0.0)
    u = _updates(model, rule, v)
    p, fb = u["params"], u["feedback"]
    assert float(jnp.abs(p["Conv_0"]["kernel"]).max()) == 0.0  # frozen (bias: transform)
    for name in shared:
        want = _expected_shared_update(v, deltas, shared, name)
        _close(p[name]["kernel"], want)
        _close(fb[name]["B"], want)
        if "bias" in p[name]:  # the bias is outside the rule: BP's
            _close(p[name]["bias"], deltas[name].sum(axis=(0, 1, 2)))
    # the classifier trains by plain FA: own input, B_fixed never updated
    _close(p["Dense_0"]["kernel"], np.asarray(inputs["Dense_0"]).T @ np.asarray(deltas["Dense_0"]))
    assert float(jnp.abs(fb["Dense_0"]["B_fixed"]).max()) == 0.0
    if grouping == "authors_code":
        # eq. 5.3: conv2's update is δ h_lᵀ with h_l the block input (the shortcut's source)
        h0 = inputs["Conv_1"]  # block 0's input
        _close(p["Conv_2"]["kernel"], _wgrad(h0, deltas["Conv_2"], v["params"]["Conv_2"]["kernel"]))
        # conv1 of block 1 does not use its own input but block 0's
        own = _wgrad(inputs["Conv_3"], deltas["Conv_3"], v["params"]["Conv_3"]["kernel"])
        assert float(jnp.abs(p["Conv_3"]["kernel"] - own).max()) > 1e-4


@pytest.mark.parametrize("grouping,k", CASES[:2])
def test_as_residual_updates_with_weight_transport(grouping, k):
    model, rule, v, deltas, inputs, shared = _setup("as", grouping, k)
    u = _updates(model, rule, v)
    p = u["params"]
    assert float(jnp.abs(p["Conv_0"]["kernel"]).max()) == 0.0
    for name in shared:
        _close(p[name]["kernel"], _expected_shared_update(v, deltas, shared, name))
    # dense layers keep their own input with exact feedback: BP's update
    _close(p["Dense_0"]["kernel"], np.asarray(inputs["Dense_0"]).T @ np.asarray(deltas["Dense_0"]))
    # the stem's bias is trained by plain BP in the forward graph; the transform freezes it
    assert float(jnp.abs(p["Conv_0"]["bias"]).max()) > 0.0
    out, _ = rule.transform().update(u, rule.transform().init(u), None)
    assert all(float(jnp.abs(a).max()) == 0.0 for a in jax.tree.leaves(out["params"]["Conv_0"]))
    jax.tree.map(_close, out["params"]["Conv_3"], p["Conv_3"])


def test_asfp_residual_w_from_own_input_b_from_shared():
    model, rule, v, deltas, inputs, shared = _setup("asfp", "authors_code", 2, decay=0.0)
    u = _updates(model, rule, v)
    for name in shared:
        w = v["params"][name]["kernel"]
        _close(u["params"][name]["kernel"], _wgrad(inputs[name], deltas[name], w))
        _close(u["feedback"][name]["B"], _expected_shared_update(v, deltas, shared, name))


def _avgpool_flat(a):
    a = np.asarray(a)
    n, h, w, c = a.shape
    return a.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).reshape(n, -1)


def test_asfp_lc_residual_local_classifiers_at_each_new_shared_activation():
    model, rule, v, deltas, inputs, shared = _setup("asfp_lc", "authors_code", 2, decay=0.0)
    u = _updates(model, rule, v)
    # k = 2: a classifier on every block input (the stem output included), owned by conv1
    for c1 in ("Conv_1", "Conv_3", "Conv_5"):
        pooled = _avgpool_flat(inputs[c1])
        lc = np.asarray(v["feedback"][c1]["LC"])
        z = pooled @ lc
        e = (np.exp(z) / np.exp(z).sum(1, keepdims=True) - np.eye(3)[np.asarray(Y)]) / 4
        _close(u["feedback"][c1]["LC"], pooled.T @ e)
    for name in ("Conv_2", "Conv_4", "Conv_6", "Conv_7"):
        assert float(jnp.abs(u["feedback"][name]["LC"]).max()) == 0.0
    # block 2 sits above every local error's entry point: ASFP's updates with BP's δ
    for name in ("Conv_5", "Conv_6", "Conv_7"):
        w = v["params"][name]["kernel"]
        _close(u["params"][name]["kernel"], _wgrad(inputs[name], deltas[name], w))
        _close(u["feedback"][name]["B"], _expected_shared_update(v, deltas, shared, name))


def test_foa_residual_updates_use_the_linear_approximate_path():
    """FoA: δ exact, ΔW_l = δ_l h̃_{l-1}ᵀ with h̃ = C_l h̃_{l-1} along the layer order."""
    blocks = BLOCKS[:2]
    model, rule = TinyResNet(widths=(4, 4), strides=(1, 1)), rules.create("foa")
    v = alearn.init(model, rule, jax.random.key(0), X)
    deltas, _, _ = _bp_deltas(v["params"], blocks)
    u = _updates(model, rule, v)["params"]
    c = {k: np.asarray(f["C"]) for k, f in v["feedback"].items()}
    h = np.asarray(X)
    for name in ("Conv_0", "Conv_1", "Conv_2", "Conv_3", "Conv_4"):  # layer order
        _close(u[name]["kernel"], _wgrad(h, deltas[name], v["params"][name]["kernel"]))
        h = np.asarray(_conv(jnp.asarray(h), jnp.asarray(c[name])))
    h_dense = h.max(axis=(1, 2))  # matched to the dense input: global max-pool (method 1)
    _close(u["Dense_0"]["kernel"], h_dense.T @ np.asarray(deltas["Dense_0"]))


def test_authors_code_needs_an_even_k_on_residual_nets():
    with pytest.raises(ValueError, match="even k.*k=3"):
        jax.eval_shape(lambda: alearn.init(TinyResNet(), rules.create("asap", k=3),
                                           jax.random.key(0), X))


def _bn(z, p):
    axes = tuple(range(z.ndim - 1))
    mean = z.mean(axis=axes)
    var = (z * z).mean(axis=axes) - mean * mean
    return (z - mean) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _pool(h):
    n, hh, ww, c = h.shape
    return h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))


def _plain_alexnet(p, x, probes):
    """The authors' AlexNet by hand (5x5 convs, BN everywhere incl. logits, 2x2 max-pool)."""
    inputs, h = {}, x
    for i in range(3):
        inputs[f"conv{i}"] = h
        z = _conv(h, p[f"conv{i}"]["kernel"]) + probes[f"conv{i}"]
        h = _pool(jax.nn.relu(_bn(z, p[f"bn_conv{i}"])))
    h = h.reshape(h.shape[0], -1)
    for j in range(2):
        inputs[f"fc{j}"] = h
        h = jax.nn.relu(_bn(h @ p[f"fc{j}"]["kernel"] + probes[f"fc{j}"], p[f"bn_fc{j}"]))
    inputs["classifier"] = h
    logits = _bn(h @ p["classifier"]["kernel"] + probes["classifier"], p["bn_out"])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), Y]), inputs


def test_asap_alexnet_conv1_and_conv2_share_conv0_pooled_output_fc_by_fa():
    """Authors' ASAP AlexNet: conv0 frozen; conv1 and conv2 use conv0's pooled output
    (tile + max-pool for conv2); the FC layers train by plain FA (own input, fixed B)."""
    model = alearn.models.create("alexnet", 3, conv_widths=(2, 4, 8), dense_widths=(6, 6))
    rule = rules.create("asap", decay=0.0)
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))
    v = _with_b_equal_w(alearn.init(model, rule, jax.random.key(0), x))
    shapes = {"conv0": (4, 8, 8, 2), "conv1": (4, 4, 4, 4), "conv2": (4, 2, 2, 8),
              "fc0": (4, 6), "fc1": (4, 6), "classifier": (4, 3)}
    probes = {k: jnp.zeros(s) for k, s in shapes.items()}
    deltas, inputs = jax.jit(jax.grad(lambda pr: _plain_alexnet(v["params"], x, pr),
                                      has_aux=True))(probes)
    u = jax.jit(functools.partial(alearn.rule_updates, model, rule))(v, x, Y)
    p, w = u["params"], v["params"]
    assert float(jnp.abs(p["conv0"]["kernel"]).max()) == 0.0
    pooled0 = inputs["conv1"]  # conv0's pooled output
    _close(p["conv1"]["kernel"], _wgrad(pooled0, deltas["conv1"], w["conv1"]["kernel"]))
    _close(p["conv2"]["kernel"], _wgrad(np_match(pooled0, (4, 2, 2, 4)), deltas["conv2"],
                                        w["conv2"]["kernel"]))
    for name in ("fc0", "fc1", "classifier"):
        _close(p[name]["kernel"], np.asarray(inputs[name]).T @ np.asarray(deltas[name]))
        assert float(jnp.abs(u["feedback"][name]["B_fixed"]).max()) == 0.0
