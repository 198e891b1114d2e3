"""alearn.wrap: unmodified Linen models trained by the rules (oracles, not shapes)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alearn
from alearn._layers import Dense, Tape
from alearn.rules import BP
from tests import _wrap_models as wm


def _updates(model, rule, variables, x, y):
    return alearn.rule_updates(model, rule, variables, x, y)


def _init_shapes(model, rule, x):
    """``alearn.init``'s variables as shapes: traced (every check runs), never compiled."""
    return jax.eval_shape(lambda k: alearn.init(model, rule, k, x), jax.random.key(0))


@pytest.mark.parametrize("kind", ["mlp", "cnn", "resnet"])
def test_bp_equals_jax_grad_of_user_loss(kind):
    native, plain, x, y = wm.pair(kind)
    wrapped, rule = alearn.wrap(plain), BP()
    # Values from the native twin (same trees; a plain Flax init compiles for seconds),
    # the wrapped init's collections and tree traced without compiling.
    v = alearn.init(native, rule, jax.random.key(0), x)
    v_wrapped = _init_shapes(wrapped, rule, x)
    assert set(v_wrapped) <= {"params", "batch_stats"}
    assert jax.tree.structure(v_wrapped) == jax.tree.structure(v)
    mutable = ["batch_stats"] if "batch_stats" in v else False
    kw = {"train": True} if kind == "resnet" else {}

    def loss(p):
        out = plain.apply({**v, "params": p}, x, mutable=mutable, **kw)
        logits = out[0] if mutable else out
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    want = jax.grad(loss)(v["params"])
    got = _updates(wrapped, rule, v, x, y)["params"]
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert wm.max_diff(got, want) <= 1e-6 * wm.max_abs(want)


@pytest.mark.parametrize("rule_name,kind", [
    ("fa", "mlp"), ("fa", "cnn"), ("fa", "resnet"),
    ("dfa", "mlp"), ("dfa", "cnn"),
    ("sign", "mlp"), ("sign", "cnn"), ("sign", "resnet"),
    ("kp", "mlp"), ("kp", "cnn"), ("kp", "resnet"),
])
def test_wrapped_twin_equals_native_model(rule_name, kind):
    native, plain, x, y = wm.pair(kind)
    rule = alearn.rules.create(rule_name)
    v = alearn.init(native, rule, jax.random.key(1), x)
    wrapped = alearn.wrap(plain)
    v_wrapped = _init_shapes(wrapped, rule, x)
    # same trees: the feedback of a user's twin sits at the same module paths as that of
    # alearn's model (both go through the wrapper; under DFA neither gives the layer that
    # reads the model input a D: the signal it would send is discarded)
    want_tree = v
    assert jax.tree.structure(v_wrapped) == jax.tree.structure(want_tree)
    want = _updates(native, rule, v, x, y)
    got = _updates(wrapped, rule, v, x, y)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert wm.max_diff(got, want) <= 1e-6 * wm.max_abs(want)
    bp = _updates(native, BP(), {k: a for k, a in v.items() if k != "feedback"}, x, y)
    assert wm.max_diff(got["params"], bp["params"]) > 1e-3 * wm.max_abs(bp["params"])


def test_asap_block_patterns_equal_alearn_resnet():
    native, plain, x, y = wm.pair("resnet")
    rule = alearn.rules.create("asap", k=2, grouping="block_input")
    v = alearn.init(native, rule, jax.random.key(2), x)
    wrapped = alearn.wrap(plain, blocks=("stage*_block*",))
    authors = alearn.rules.create("asap", k=2)  # the authors' grouping works on a user's net
    want = _updates(native, authors, v, x, y)
    got = _updates(wrapped, authors, v, x, y)
    assert wm.max_diff(got, want) <= 1e-6 * wm.max_abs(want)
    want = _updates(native, rule, v, x, y)
    got = _updates(wrapped, rule, v, x, y)
    assert wm.max_diff(got, want) <= 1e-6 * wm.max_abs(want)
    # without the marks the groups follow layer order: a different (still valid) grouping
    by_order = _updates(alearn.wrap(plain), rule, v, x, y)
    assert wm.max_diff(by_order, want) > 1e-4 * wm.max_abs(want)


def _dfa_oracle(params, feedback, x, dloss):
    """Hand-written DFA on a ReLU MLP: δ_l = relu'(a_l) ⊙ (δ_L D_{l+1}), ΔW_l = h_{l-1}ᵀ δ_l."""
    names = sorted(params, key=lambda n: int(n.split("_")[1]))
    hs, pre = [x], []
    for n in names:
        a = hs[-1] @ params[n]["kernel"] + params[n]["bias"]
        pre.append(a)
        hs.append(jax.nn.relu(a))
    out = pre[-1]
    e = dloss(out).reshape(x.shape[0], -1)
    grads = {}
    for i, n in enumerate(names):
        if i == len(names) - 1:
            delta = dloss(out)
        else:
            d_next = feedback[names[i + 1]]["D"]
            if d_next.shape[0] == e.shape[1]:  # flattened: the whole output error
                proj = e @ d_next
            else:  # position-wise: each position's error by the same D
                proj = e.reshape(x.shape[0], -1, d_next.shape[0]) @ d_next
            delta = (pre[i] > 0) * proj.reshape(pre[i].shape)
        h = hs[i]
        grads[n] = {"kernel": h.reshape(-1, h.shape[-1]).T @ delta.reshape(-1, delta.shape[-1]),
                    "bias": delta.reshape(-1, delta.shape[-1]).sum(0)}
    return grads


class SeqMLP(nn.Module):
    """Dense layers on (batch, time, features): a sequence output (batch, time, out)."""

    out: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(7)(x))
        x = nn.relu(nn.Dense(6)(x))
        return nn.Dense(self.out)(x)


@pytest.mark.parametrize("shape,sequence", [((6, 5), "positionwise"), ((6, 4, 5), "flatten"),
                                            ((6, 4, 5), "positionwise")],
                         ids=["regression", "sequence-flatten", "sequence-positionwise"])
def test_dfa_any_loss_matches_hand_written_oracle(shape, sequence):
    """Regression and sequence outputs; flattened and position-wise D."""
    x = jax.random.normal(jax.random.key(3), shape)
    model = alearn.wrap(SeqMLP())
    rule = alearn.rules.create("dfa", sequence=sequence)
    v = alearn.init(model, rule, jax.random.key(4), x)
    t = jax.random.normal(jax.random.key(5), (*shape[:-1], 3))

    def mse(pred, target):
        return jnp.mean((pred - target) ** 2)

    (loss, out, _), upd = alearn.value_and_updates(mse, model, rule, v, x, t)
    assert out.shape == t.shape
    np.testing.assert_allclose(loss, mse(SeqMLP().apply({"params": v["params"]}, x), t),
                               rtol=1e-6)
    want = _dfa_oracle(v["params"], v["feedback"], x, jax.grad(lambda o: mse(o, t)))
    assert wm.max_diff(upd["params"], want) <= 1e-5 * wm.max_abs(want)
    if sequence == "flatten" or len(shape) == 2:
        k = int(np.prod(t.shape[1:]))
        assert v["feedback"]["Dense_1"]["D"].shape == (k, int(np.prod(shape[1:-1])) * 7)
    else:  # one D shared over positions: memory linear in the width
        assert v["feedback"]["Dense_1"]["D"].shape == (3, 7)


class Encoder(nn.Module):
    """A one-block Transformer encoder classifier (attention + Dense + Einsum head)."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8)(x)
        h = h + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(h)
        h = nn.LayerNorm()(h)
        h = h + nn.Dense(8)(nn.gelu(nn.Dense(16)(h)))
        return nn.Einsum((8, 4), "bd,dk->bk")(h.mean(axis=1))


def test_general_layers_fa_with_feedback_equal_to_weights_is_bp():
    """DenseGeneral (attention) and Einsum through the rule: FA with B = W equals BP."""
    x = jax.random.normal(jax.random.key(6), (3, 5, 6))
    y = jnp.array([0, 3, 1])
    model, fa = alearn.wrap(Encoder()), alearn.rules.create("fa")
    v = alearn.init(model, fa, jax.random.key(0), x)
    kernels = {p[:-1]: a for p, a in jax.tree_util.tree_flatten_with_path(v["params"])[0]
               if p[-1].key == "kernel"}
    assert len(kernels) == 8  # embed, q, k, v, out, mlp x2, head
    fb = jax.tree_util.tree_map_with_path(lambda p, b: kernels[p[:-1]], v["feedback"])
    # jitted: attention op by op compiles dozens of small programs (seconds)
    updates = jax.jit(lambda fb_: alearn.rule_updates(model, fa, {**v, "feedback": fb_}, x, y))
    got = updates(fb)
    want = jax.jit(jax.grad(lambda p: alearn.cross_entropy(Encoder().apply({"params": p}, x),
                                                           y)))(v["params"])
    assert wm.max_diff(got["params"], want) <= 1e-5 * wm.max_abs(want)
    plain_fa = updates(v["feedback"])  # the random B really changes the updates
    assert wm.max_diff(plain_fa["params"], want) > 1e-3 * wm.max_abs(want)


class NoLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.LayerNorm()(x)


def test_bad_input_fails_at_init_naming_model_and_expectation():
    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match=r"alearn.wrap\(NoLayers\).*no supported layer"):
        alearn.init(alearn.wrap(NoLayers()), BP(), jax.random.key(0), x)
    _, plain, xi, _ = wm.pair("resnet")
    with pytest.raises(ValueError, match=r"PlainResNet.*\['layer\*'\] match no module.*"
                                         r"stage0_block0"):
        alearn.init(alearn.wrap(plain, blocks=("layer*",)),
                    alearn.rules.create("asap", grouping="block_input"), jax.random.key(0), xi)
    with pytest.raises(TypeError, match="expects a flax.linen.Module"):
        alearn.wrap(lambda x: x)


def test_rule_missing_at_apply_time_raises():
    native, plain, x, y = wm.pair("mlp")
    fa = alearn.rules.create("fa")
    v = alearn.init(native, fa, jax.random.key(0), x)
    with pytest.raises(ValueError, match="feedback weights but no rule"):
        native.apply(v, x)
    bp_logits = native.apply(v, x, rule=BP())  # an explicit rule is the caller's choice
    np.testing.assert_allclose(bp_logits, native.apply(v, x, rule=fa), rtol=1e-6)
    wrapped = alearn.wrap(plain)
    with pytest.raises(ValueError, match="feedback weights but no rule"):
        wrapped.apply(v, x)
    # the explicit alearn entry points drop feedback for rules without any (BP reference)
    bp = _updates(native, BP(), v, x, y)
    assert jax.tree.structure(bp) == jax.tree.structure({"params": v["params"]})


class Unfinished(nn.Module):
    @nn.compact
    def __call__(self, x, *, rule=BP(), train=False):
        tape = Tape(rule, x.shape[0], 3)
        return Dense(3)(jax.nn.relu(Dense(4)(x, tape)), tape)  # forgot tape.finish


def test_forgotten_tape_finish_raises():
    x = jnp.ones((2, 5))
    with pytest.raises(ValueError, match=r"never called tape.finish.*'dfa'"):
        alearn.init(Unfinished(), alearn.rules.create("dfa"), jax.random.key(0), x)
    alearn.init(Unfinished(), alearn.rules.create("fa"), jax.random.key(0), x)  # harmless


def test_wm_train_step_runs_mirror_by_default():
    from alearn import train
    _, plain, x, y = wm.pair("mlp")
    model, rule = alearn.wrap(plain), alearn.rules.create("wm", mirror_every=1)
    opt = train.create_rule_optimizer(rule, optax.sgd(0.0))
    mesh = train.data_mesh(jax.devices()[:1])
    state = train.create_train_state(model, rule, opt, jax.random.key(0), x)
    b0 = state.fixed["feedback"]
    batch = {"image": x, "label": y}
    after = {}
    for hook in (train.step.RULE_HOOK, None):
        step = train.make_train_step(model, rule, opt, mesh=mesh, step_hook=hook, donate=False)
        new, _ = step(train.replicate(state, mesh), train.shard_batch(batch, mesh))
        after[hook] = new.fixed["feedback"]
    assert wm.max_diff(after[None], b0) == 0.0  # explicitly opted out: B untouched
    assert wm.max_diff(after[train.step.RULE_HOOK], b0) > 1e-3  # default: mirror mode ran


def test_registered_flax_cnn_trains_every_layer_by_dfa():
    """``--config.model=flax_cnn``: the wrapped Flax-examples CNN, δ_L reaches each layer."""
    model = alearn.models.create("flax_cnn", 4, features=(2, 3), hidden=5)
    assert isinstance(model, alearn.Wrapped)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    y = jnp.arange(4)
    dfa = alearn.rules.create("dfa")
    v = alearn.init(model, dfa, jax.random.key(1), x)
    upd = alearn.rule_updates(model, dfa, v, x, y)["params"]
    bp = alearn.rule_updates(model, BP(), v, x, y)["params"]
    for layer in ("Conv_0", "Conv_1", "Dense_0"):  # hidden layers: DFA's own, non-zero
        assert float(jnp.max(jnp.abs(upd[layer]["kernel"]))) > 1e-4
        assert wm.max_diff(upd[layer], bp[layer]) > 1e-4
    # the output layer's update is BP's in every rule of this family
    assert wm.max_diff(upd["Dense_1"], bp["Dense_1"]) <= 1e-6
