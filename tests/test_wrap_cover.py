"""The wrapper on models shaped like the Flax examples / big_vision (issue 29).

Oracles: every kernel is routed (counted against ``params`` by construction, and with all
feedback set to zero no error reaches below the head — a layer left on BP would leak
``Wᵀδ``); BP through the wrapper equals ``jax.grad``; DFA on the ResNet equals an
independent plain-JAX pure DFA (``tests/_dfa_oracles.py``); shortcuts and uncovered
parameters fail at init with the module path and the fix.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alearn
from tests import _dfa_oracles as oracles
from tests import _flax_zoo as zoo

# blocks=/receivers= that make each zoo model pure DFA, and the output selector
WRAP = {
    "resnet": dict(blocks=("ResNetBlock_*",)),
    "transformer_lm": dict(receivers=("block_*/MultiHeadDotProductAttention_0",
                                      "block_*/LMMlpBlock_0")),
    "vit": dict(output=0, receivers=("embedding",
                                     "Transformer/encoderblock/MultiHeadDotProductAttention_0",
                                     "Transformer/encoderblock/MlpBlock_0")),
    # DFA through time: the cell state carries later steps' signals (a recurrence)
    "lstm_classifier": dict(dfa_shortcuts="allow"),
    "mlp_mixer": dict(dfa_shortcuts="allow"),
}
RULES = ("fa", "dfa", "kp", "sign", "wm")


def _loss(name):
    def loss(out, y):
        out = out[0] if isinstance(out, tuple) else out
        return alearn.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return loss


def _setup(name, rule_name, **extra):
    model, inputs, y = zoo.make(name)
    kw = {**WRAP[name], **extra}
    wrapped = alearn.wrap(model, **kw)
    rule = alearn.rules.create(rule_name)
    v = wrapped.init(jax.random.key(0), *inputs, rule=rule)
    return wrapped, rule, v, inputs, y


def _kernels(params) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return {"/".join(str(k.key) for k in p): a for p, a in flat if p[-1].key == "kernel"}


@pytest.mark.parametrize("name", zoo.ALL_LINEN)
def test_every_kernel_is_routed_with_its_feedback(name):
    """By construction: each ``kernel`` leaf of params has a B of its shape, and describe
    lists it under the rule (uncovered parameters would have raised at init)."""
    wrapped, rule, v, inputs, _ = _setup(name, "fa")
    kernels = _kernels(v["params"])
    fb = {k[:-len("/B")]: a for k, a in _kernels_fb(v["feedback"]).items()}
    assert set(fb) == {k[:-len("/kernel")] for k in kernels} | _attend_paths(name)
    for k, a in kernels.items():
        assert fb[k[:-len("/kernel")]].shape == a.shape
    desc = alearn.describe(wrapped, rule, *inputs, variables=v)
    routed = [r for r in desc.rows if r.update == "fa"]
    assert len(routed) == len(kernels) + len(_attend_paths(name))
    assert all(r.update in ("fa", "local error (element-wise)") for r in desc.rows)


def _kernels_fb(feedback):
    flat, _ = jax.tree_util.tree_flatten_with_path(feedback)
    return {"/".join(str(k.key) for k in p): a for p, a in flat if p[-1].key == "B"}


def _attend_paths(name):
    return {"embed"} if name == "transformer_lm" else set()


@pytest.mark.parametrize("name", ["lstm_classifier", "transformer_lm", "vit"])
def test_zero_feedback_stops_every_error_below_the_head(name):
    """FA with every B = 0: only the head learns. A layer left on BP (an unrouted LSTM
    gate, a tied head, an attention projection) would pass Wᵀδ down and move the rest."""
    wrapped, rule, v, inputs, y = _setup(name, "fa")
    zero = jax.tree.map(jnp.zeros_like, v["feedback"])
    (_, _, _), upd = jax.jit(lambda fb: alearn.value_and_updates(
        _loss(name), wrapped, rule, {**v, "feedback": fb}, *inputs, targets=y))(zero)
    head = {"lstm_classifier": "classifier", "transformer_lm": "embed", "vit": "head"}[name]
    flat, _ = jax.tree_util.tree_flatten_with_path(upd["params"])
    moved = {"/".join(str(k.key) for k in p) for p, a in flat if float(jnp.abs(a).max()) > 0}
    assert moved and all(p.startswith(head + "/") for p in moved), sorted(moved)


@pytest.mark.parametrize("name", ["resnet", "lstm_classifier", "vit"])
def test_bp_through_the_wrapper_is_jax_grad(name):
    model, inputs, y = zoo.make(name)
    wrapped = alearn.wrap(model, **WRAP[name])
    bp = alearn.rules.create("bp")
    v = wrapped.init(jax.random.key(0), *inputs, rule=bp)
    (_, _, _), upd = alearn.value_and_updates(_loss(name), wrapped, bp, v, *inputs, targets=y,
                                              train=False)
    kw = {"train": False} if name in ("resnet", "vit") else {}
    want = jax.grad(lambda p: _loss(name)(model.apply({**v, "params": p}, *inputs, **kw), y))(
        v["params"])
    scale = max(float(jnp.abs(b).max()) for b in jax.tree.leaves(want))
    for a, b in zip(jax.tree.leaves(upd["params"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)


def test_dfa_on_the_resnet_is_pure_dfa():
    """Receivers at the block inputs: the updates equal an independent pure DFA."""
    wrapped, rule, v, (x,), y = _setup("resnet", "dfa")
    (_, _, _), upd = alearn.value_and_updates(alearn.cross_entropy, wrapped, rule, v, x, y,
                                              train=False)
    want, _ = oracles.resnet_dfa(v["params"], v["feedback"], x, alearn.cross_entropy, y,
                                 batch_stats=v["batch_stats"])
    for a, b in zip(jax.tree.leaves(upd["params"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()) + 1e-9)


def test_dfa_without_blocks_on_a_resnet_is_refused():
    model, (x,), _ = zoo.make("resnet")
    with pytest.raises(ValueError, match=r"blocks=\('ResNetBlock_\*',\)"):
        alearn.wrap(model).init(jax.random.key(0), x, rule=alearn.rules.create("dfa"))


def test_dfa_in_a_pre_ln_block_names_the_receivers_fix():
    model, (t,), _ = zoo.make("transformer_lm")
    with pytest.raises(ValueError, match="receivers=") as err:
        alearn.wrap(model, blocks=("block_*",)).init(jax.random.key(0), t,
                                                     rule=alearn.rules.create("dfa"))
    assert "block_0/" in str(err.value)


class _RawMatmul(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.lecun_normal(), (x.shape[-1], 4))
        pos = self.param("pos", nn.initializers.zeros, (x.shape[-1],))
        return nn.Dense(3)(jnp.tanh((x + pos) @ w))


def test_uncovered_parameter_fails_at_init_and_exclude_allows_it():
    x = jnp.ones((2, 5))
    with pytest.raises(ValueError, match=r"\['w'\].*exclude="):
        alearn.wrap(_RawMatmul()).init(jax.random.key(0), x, rule=alearn.rules.create("fa"))
    wrapped = alearn.wrap(_RawMatmul(), exclude=("w",))
    v = wrapped.init(jax.random.key(0), x, rule=alearn.rules.create("fa"))
    rows = {r.path: r.update for r in alearn.describe(wrapped, alearn.rules.create("fa"), x,
                                                      variables=v).rows}
    assert rows["w"] == "bp (exclude=)" and rows["pos"] == "local error (element-wise)"


@pytest.mark.parametrize("name", zoo.ALL_LINEN)
@pytest.mark.parametrize("rule_name", RULES)
def test_every_rule_runs_on_every_model(name, rule_name):
    """Init (with its checks) and one update of every rule; finite, params-shaped."""
    wrapped, rule, v, inputs, y = _setup(name, rule_name)
    (loss, _, _), upd = jax.jit(lambda v_: alearn.value_and_updates(
        _loss(name), wrapped, rule, v_, *inputs, targets=y))(v)
    assert np.isfinite(float(loss))
    assert jax.tree.structure(upd["params"]) == jax.tree.structure(v["params"])
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(upd))
    if rule_name == "wm":  # the mirror phase on every layout (attention, stacked, attend)
        mirrored = jax.jit(rule.mirror)(v["params"], v["feedback"], jax.random.key(1))
        assert jax.tree.structure(mirrored) == jax.tree.structure(v["feedback"])
        new, old = _kernels_fb(mirrored), _kernels_fb(v["feedback"])
        changed = [float(jnp.abs(new[k] - old[k]).max()) > 0 for k in old]
        assert changed and all(changed)


@pytest.mark.parametrize("name", zoo.ALL_LINEN)
def test_asap_on_every_model_or_a_clear_refusal(name):
    """ASAP (block-input grouping) on token, attention and conv models; across an LSTM's
    time steps the sharing order is undefined and says so."""
    model, inputs, y = zoo.make(name)
    wrapped = alearn.wrap(model, **WRAP[name])
    rule = alearn.rules.create("asap", grouping="block_input")
    if name == "lstm_classifier":
        with pytest.raises(ValueError, match="recurrence is not supported"):
            wrapped.init(jax.random.key(0), *inputs, rule=rule)
        return
    v = wrapped.init(jax.random.key(0), *inputs, rule=rule)
    (loss, _, _), upd = jax.jit(lambda v_: alearn.value_and_updates(
        _loss(name), wrapped, rule, v_, *inputs, targets=y))(v)
    assert np.isfinite(float(loss))
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(upd))


def test_kp_decay_pairs_a_tied_head_embedding_with_its_feedback():
    """KP's decay pairs B with the weight it serves: ``embedding`` for ``Embed.attend``."""
    from alearn.rules.kp import kp_decay
    w, b = jnp.full((4, 3), 2.0), jnp.full((4, 3), 1.0)
    params = {"params": {"embed": {"embedding": w}, "norm": {"scale": jnp.ones(3)}},
              "feedback": {"embed": {"B": b}}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = kp_decay(0.5, decay_kernel=True)
    out, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(out["params"]["embed"]["embedding"], 0.5 * w)
    np.testing.assert_allclose(out["feedback"]["embed"]["B"], 0.5 * b)
    np.testing.assert_allclose(out["params"]["norm"]["scale"], 0.0)


class _Member(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(5)(x))


class _VmapJit(nn.Module):
    """An ensemble by ``nn.vmap`` (params split over a leading axis) and an ``nn.jit`` head."""

    @nn.compact
    def __call__(self, x):
        ens = nn.vmap(_Member, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=None, out_axes=0, axis_size=3)
        return nn.jit(nn.Dense)(4, name="head")(ens(name="ens")(x).mean(0))


def test_vmap_and_jit_lifted_layers_stack_feedback_and_fa_with_b_equal_w_is_bp():
    x, y = jax.random.normal(jax.random.key(0), (6, 7)), jnp.array([0, 1, 2, 3, 0, 1])
    wrapped, fa = alearn.wrap(_VmapJit()), alearn.rules.create("fa")
    v = wrapped.init(jax.random.key(1), x, rule=fa)
    assert v["feedback"]["ens"]["Dense_0"]["B"].shape == (3, 7, 5)  # stacked like the kernel
    fb = {"ens": {"Dense_0": {"B": v["params"]["ens"]["Dense_0"]["kernel"]}},
          "head": {"B": v["params"]["head"]["kernel"]}}
    (_, _, _), upd = alearn.value_and_updates(alearn.cross_entropy, wrapped, fa,
                                              {**v, "feedback": fb}, x, y)
    want = jax.grad(lambda p: alearn.cross_entropy(_VmapJit().apply({"params": p}, x), y))(
        v["params"])
    for a, b in zip(jax.tree.leaves(upd["params"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    dfa = alearn.rules.create("dfa")
    vd = wrapped.init(jax.random.key(1), x, rule=dfa)
    (loss, _, _), _ = alearn.value_and_updates(alearn.cross_entropy, wrapped, dfa, vd, x, y)
    assert np.isfinite(float(loss))


class _ScanBlock(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return x + nn.Dense(x.shape[-1], name="sub")(nn.LayerNorm()(x)), None


class _ScannedResidual(nn.Module):
    """A stem, residual blocks by ``nn.scan`` (no remat), a head."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(6, name="stem")(x)
        x, _ = nn.scan(_ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                       length=3)(name="blocks")(x, None)
        return nn.Dense(4, name="head")(x)


def test_dfa_shortcut_check_follows_a_residual_stream_through_nn_scan():
    """Scanned blocks are followed step by step: the stem's output passes every block's
    shortcut (refused, as in the unrolled model); a receiver on the stem's output fixes it."""
    x = jnp.ones((2, 5))
    dfa = alearn.rules.create("dfa")
    with pytest.raises(ValueError, match=r"'stem' reaches .*loop step 2"):
        alearn.wrap(_ScannedResidual(), receivers=("blocks/sub",)).init(
            jax.random.key(0), x, rule=dfa)
    wrapped = alearn.wrap(_ScannedResidual(), receivers=("stem", "blocks/sub"))
    v = wrapped.init(jax.random.key(0), x, rule=dfa)
    assert v["feedback"]["blocks"]["sub"]["D_out"].shape[0] == 3  # stacked per block
    (loss, _, _), _ = alearn.value_and_updates(alearn.cross_entropy, wrapped, dfa, v, x,
                                               jnp.array([0, 1]))
    assert np.isfinite(float(loss))


def test_dfa_eager_apply_on_numpy_input_after_jitted_init():
    """The README pattern: ``alearn.init`` (jitted) then an eager ``apply`` on a NumPy
    batch: the layer reading the model input owns no D either way."""
    model, (x,), _ = zoo.make("resnet")
    wrapped, dfa = alearn.wrap(model, **WRAP["resnet"]), alearn.rules.create("dfa")
    v = alearn.init(wrapped, dfa, jax.random.key(0), x)
    assert "conv_init" not in v["feedback"]
    out = wrapped.apply(v, np.asarray(x), rule=dfa)
    assert out.shape == (x.shape[0], zoo.RESNET_CLASSES)


@pytest.mark.parametrize("name", zoo.ALL_LINEN)
def test_fa_with_feedback_equal_to_weights_is_bp_on_every_model(name):
    """B := W (kernel, or the tied head's embedding) at every routed map: FA is BP, so
    every map (attention, LSTM gates, attend, scanned blocks) runs its rule's backward."""
    model, inputs, y = zoo.make(name)
    wrapped, fa = alearn.wrap(model, **WRAP[name]), alearn.rules.create("fa")
    v = wrapped.init(jax.random.key(0), *inputs, rule=fa)
    flat = dict(jax.tree_util.tree_flatten_with_path(v["params"])[0])

    def weight(path, _):
        for key in ("kernel", "embedding"):
            if (k := path[:-1] + (jax.tree_util.DictKey(key),)) in flat:
                return flat[k]
        raise KeyError(path)

    fb = jax.tree_util.tree_map_with_path(weight, v["feedback"])
    (_, _, _), upd = jax.jit(lambda v_: alearn.value_and_updates(
        _loss(name), wrapped, fa, v_, *inputs, targets=y, train=False))({**v, "feedback": fb})
    kw = {"train": False} if name in ("resnet", "vit", "mlp_mixer") else {}
    want = jax.jit(jax.grad(lambda p: _loss(name)(
        model.apply({**v, "params": p}, *inputs, **kw), y)))(v["params"])
    scale = max(float(jnp.abs(b).max()) for b in jax.tree.leaves(want))
    for a, b in zip(jax.tree.leaves(upd["params"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)
