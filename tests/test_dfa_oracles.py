"""The plain-JAX DFA oracles (tests/_dfa_oracles.py) against identities of their own.

Nothing here imports alearn. Checked: the oracles' plain forward equals the Flax zoo
model's output; DFA with D = ∂output/∂activation (batch 1) equals ``jax.grad`` of the Flax
model; zeroing one D silences exactly the parameters it alone feeds (nothing passes a
block receiver or a residual shortcut, key/value send nothing); DFA on an MLP equals the
hand-written formula (flattened and position-wise D) and, with D = W2ᵀ on a linear net,
BP; a missing D is a KeyError naming it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import _dfa_oracles as O
from tests import _flax_zoo as zoo


def _ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _max_abs(tree) -> float:
    return float(max(jnp.max(jnp.abs(a)) for a in jax.tree.leaves(tree)))


def _max_diff(a, b) -> float:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return float(max(jnp.max(jnp.abs(u - v)) for u, v in zip(jax.tree.leaves(a),
                                                               jax.tree.leaves(b))))


def _setup(name):
    model, inputs, targets = zoo.make(name)
    kw = dict(train=True) if name == "resnet" else {}
    v = jax.jit(lambda k: model.init(k, *inputs, **kw))(jax.random.key(0))

    def flax_forward(params, *inputs):
        out = model.apply({**v, "params": params}, *inputs, **kw,
                          mutable=["batch_stats"] if "batch_stats" in v else False)
        return out[0] if "batch_stats" in v else out

    forward = O.resnet_forward if name == "resnet" else O.lm_forward
    return v["params"], inputs, targets, flax_forward, forward


def test_oracle_resnet_eval_mode_uses_the_running_statistics():
    model, (x,), _ = zoo.make_resnet()
    v = jax.jit(lambda k: model.init(k, x, train=True))(jax.random.key(0))
    stats = jax.tree.map(lambda a: a + 0.3, v["batch_stats"])  # not the init's 0 / 1
    v = {**v, "batch_stats": stats}
    want, got = jax.jit(lambda v: (model.apply(v, x, train=False), O.resnet_forward(
        v["params"], x, ctx=O.Ctx(), batch_stats=v["batch_stats"])))(v)
    assert float(jnp.max(jnp.abs(want - got))) <= 1e-6 * float(jnp.max(jnp.abs(want)))


@pytest.mark.parametrize("name", ["resnet", "transformer_lm"])
def test_oracle_forward_is_the_model_and_dfa_with_jacobian_feedback_is_bp(name):
    params, inputs, targets, flax_forward, forward = _setup(name)
    one = tuple(a[:1] for a in inputs)

    @jax.jit
    def check(params, inputs, one, y1):
        plain = forward(params, *inputs, ctx=O.Ctx())
        fb = O.jacobian_feedback(forward, params, one)  # batch 1: D = ∂out/∂activation
        dfa, _ = O.dfa(forward, params, fb, one, _ce, y1)
        bp = jax.grad(lambda p: _ce(flax_forward(p, *one), y1))(params)
        return plain, flax_forward(params, *inputs), dfa, bp

    plain, want, dfa, bp = check(params, inputs, one, targets[:1])
    assert float(jnp.max(jnp.abs(plain - want))) <= 1e-6 * float(jnp.max(jnp.abs(want)))
    assert _max_diff(dfa, bp) <= 1e-5 * _max_abs(bp)


# (feedback point whose D is zeroed, params that must then get exactly 0, params that must
# not). A receiver or sending layer feeds only the params between it and the next point
# below that sends: e.g. ResNetBlock_1's receiver feeds ResNetBlock_0's Conv_1/BatchNorm_1
# but not its Conv_0 (Conv_1 sends) nor the stem (ResNetBlock_0's receiver).
MHA = "MultiHeadDotProductAttention_0"
CUTS = {
    "resnet": [
        (("ResNetBlock_1",), [("ResNetBlock_0", "Conv_1"), ("ResNetBlock_0", "BatchNorm_1")],
         [("ResNetBlock_0", "Conv_0"), ("ResNetBlock_0", "BatchNorm_0"), ("conv_init",),
          ("ResNetBlock_1",)]),
        (("ResNetBlock_0",), [("conv_init",), ("bn_init",)], [("ResNetBlock_0",)]),
        (("ResNetBlock_1", "Conv_1"), [("ResNetBlock_1", "Conv_0"),
                                       ("ResNetBlock_1", "BatchNorm_0")],
         [("ResNetBlock_1", "Conv_1"), ("ResNetBlock_1", "conv_proj"), ("ResNetBlock_0",)]),
        (("Dense_0",), [("ResNetBlock_1", n) for n in ("Conv_1", "BatchNorm_1", "conv_proj",
                                                        "norm_proj")],
         [("Dense_0",), ("ResNetBlock_1", "Conv_0"), ("ResNetBlock_0",)]),
    ],
    "transformer_lm": [
        (("block_1",), [("block_0", "LMMlpBlock_0", "Dense_1")],
         [("block_0", MHA, "out"), ("block_0", "LayerNorm_1"),
          ("block_0", "LMMlpBlock_0", "Dense_0"), ("posembed_output",)]),
        (("block_0",), [("posembed_output",)], [("embed",), ("block_0",)]),
        (("block_1", MHA, "query"), [("block_1", "LayerNorm_0")],
         [("block_1", MHA, k) for k in ("query", "key", "value", "out")]),
        (("block_1", MHA, "out"), [("block_1", MHA, k) for k in ("query", "key", "value")],
         [("block_1", MHA, "out"), ("block_1", "LayerNorm_0")]),
        (("embed",), [("encoderdecoder_norm",), ("block_1", "LMMlpBlock_0", "Dense_1")],
         [("embed",), ("block_1", "LMMlpBlock_0", "Dense_0"), ("block_1", MHA, "out")]),
    ],
}


def _at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@pytest.mark.parametrize("name", ["resnet", "transformer_lm"])
def test_oracle_zeroed_feedback_silences_exactly_what_it_feeds(name):
    params, inputs, targets, _, forward = _setup(name)
    fb = O.random_feedback(forward, params, inputs, jax.random.key(3))
    if name == "transformer_lm":  # position-wise D: (V, features of the activation)
        assert _at(fb, ("embed",))["D"].shape == (32, 16)
        assert _at(fb, ("block_0", MHA, "out"))["D"].shape == (32, 16)
        assert _at(fb, ("block_0", "LMMlpBlock_0", "Dense_1"))["D"].shape == (32, 32)
        assert "key" not in _at(fb, ("block_0", MHA))  # key/value read query's input
    variants = [fb]
    for cut, _, _ in CUTS[name]:
        zeroed = jax.tree.map(lambda a: a, fb)  # new dicts, same leaves
        _at(zeroed, cut)["D"] = jnp.zeros_like(_at(fb, cut)["D"])
        variants.append(zeroed)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *variants)

    @jax.jit
    def run(params, stacked, inputs, y):
        _, e = O.output_error(forward, params, inputs, _ce, y)
        bp = jax.grad(lambda p: _ce(forward(p, *inputs, ctx=O.Ctx()), y))(params)
        return bp, jax.vmap(lambda f: O.dfa_updates(forward, params, f, inputs, e))(stacked)

    bp, ups = run(params, stacked, inputs, targets)
    full = jax.tree.map(lambda a: a[0], ups)
    assert _max_diff(full, bp) > 0.1 * _max_abs(bp)  # random D: DFA is not BP
    for i, (cut, silenced, alive) in enumerate(CUTS[name], start=1):
        up = jax.tree.map(lambda a, i=i: a[i], ups)
        for path in silenced:
            assert _max_abs(_at(up, path)) == 0.0, (cut, path)
        for path in alive:
            assert _max_abs(_at(up, path)) > 0.0, (cut, path)
        if cut[-1] in ("ResNetBlock_1", "block_1"):  # a receiver feeds nothing above it
            top = cut[:1]
            assert _max_diff(_at(up, top), _at(full, top)) == 0.0


def _relu_mlp(shape_in, widths, key):
    keys = jax.random.split(key, len(widths))
    params, d = {}, shape_in[-1]
    for i, (k, w) in enumerate(zip(keys, widths)):
        params[f"Dense_{i}"] = {"kernel": jax.random.normal(k, (d, w)) / np.sqrt(d),
                                "bias": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (w,))}
        d = w
    return params


def test_oracle_linear_mlp_with_d_equal_w2_transpose_is_bp():
    params = _relu_mlp((6, 9), (7, 4), jax.random.key(4))
    x = jax.random.normal(jax.random.key(5), (6, 9))
    y = jnp.arange(6) % 4
    linear = dict(act=lambda h: h)

    @jax.jit
    def run(params, x, y):
        fb = {"Dense_1": {"D": params["Dense_1"]["kernel"].T}}
        dfa, _ = O.dfa(O.mlp_forward, params, fb, (x,), _ce, y, **linear)
        return dfa, jax.grad(lambda p: _ce(O.mlp_forward(p, x, ctx=O.Ctx(), **linear), y))(params)

    dfa, bp = run(params, x, y)
    assert _max_diff(dfa, bp) <= 1e-6 * _max_abs(bp)


@pytest.mark.parametrize("shape,sequence", [((6, 9), "flatten"), ((6, 5, 9), "positionwise"),
                                            ((6, 5, 9), "flatten")])
def test_oracle_relu_mlp_equals_the_dfa_formula(shape, sequence):
    params = _relu_mlp(shape, (7, 6, 3), jax.random.key(6))
    x = jax.random.normal(jax.random.key(7), shape)
    target = jax.random.normal(jax.random.key(8), shape[:-1] + (3,))
    mse = lambda o, t: jnp.mean((o - t) ** 2)
    fb = O.random_feedback(O.mlp_forward, params, (x,), jax.random.key(9), sequence=sequence)
    assert "Dense_0" not in fb  # the first layer's input error is discarded: no D read
    dfa, e = jax.jit(lambda p, f, x, t: O.dfa(O.mlp_forward, p, f, (x,), mse, t))(
        params, fb, x, target)
    # hand-written: δ_l = relu'(a_l) ⊙ reshape(e D_{l+1}), ΔW_l = h_{l-1}ᵀ δ_l
    hs, pre = [x], []
    for i in range(3):
        p = params[f"Dense_{i}"]
        pre.append(hs[-1] @ p["kernel"] + p["bias"])
        hs.append(jax.nn.relu(pre[-1]))
    b = shape[0]
    for i in range(3):
        if i == 2:
            delta = e
        else:
            d = fb[f"Dense_{i + 1}"]["D"]
            if sequence == "positionwise":
                proj = e @ d
            else:
                proj = (e.reshape(b, -1) @ d).reshape(pre[i].shape)
            delta = (pre[i] > 0) * proj
        h = hs[i]
        want_k = h.reshape(-1, h.shape[-1]).T @ delta.reshape(-1, delta.shape[-1])
        got = dfa[f"Dense_{i}"]
        np.testing.assert_allclose(got["kernel"], want_k, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["bias"], delta.reshape(-1, delta.shape[-1]).sum(0),
                                   rtol=1e-5, atol=1e-6)


def test_oracle_missing_feedback_is_a_key_error():
    params = _relu_mlp((2, 3), (4, 2), jax.random.key(0))
    x = jnp.ones((2, 3))
    with pytest.raises(KeyError, match="feedback has no D at Dense_1"):
        O.dfa_updates(O.mlp_forward, params, {"Dense_0": {"D": jnp.zeros((2, 3))}}, (x,),
                      jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="Dense_1: D has shape"):
        O.dfa_updates(O.mlp_forward, params, {"Dense_1": {"D": jnp.zeros((3, 4))}}, (x,),
                      jnp.ones((2, 2)))
