"""DFA through ``alearn.wrap`` on the zoo models against the plain-JAX oracles, shortcut
invariance, and 100 training steps.

1. The lm1b-style TransformerLM wrapped with ``receivers=`` on every block's attention and
   MLP sub-modules (``WRAP_LM``, as ``tests/test_wrap_cover.py::WRAP``): the updates of
   ``alearn.value_and_updates`` equal ``_dfa_oracles.lm_forward(receivers=LM_SUB_BLOCKS)``
   for every parameter (the oracle's own self-check for that mode, DFA with Jacobian
   feedback = BP, runs here too).
2. Shortcut invariance: models identical to the zoo's but for ``lax.stop_gradient`` on the
   shortcuts, wrapped the same way, with the same variables: see each test's docstring
   for which placements pure DFA implies and what the result is.
3. DFA lowers the training loss of the zoo ResNet and LM in 100 steps (one fixed batch).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import alearn
from tests import _dfa_oracles as O
from tests import _flax_zoo as zoo

MHA = "MultiHeadDotProductAttention_0"
WRAP_LM = dict(receivers=(f"block_*/{MHA}", "block_*/LMMlpBlock_0"))
WRAP_RESNET = dict(blocks=("ResNetBlock_*",))
# the stream's bottom: a receiver on the (token + position) embedding as well
WRAP_LM_EMB = dict(receivers=WRAP_LM["receivers"] + ("posembed_output",))
# the parameters whose DFA update is the gradient of the residual stream below the lowest
# receiver under WRAP_LM (the lookup part of the tied embedding, the position embedding)
STREAM_PARAMS = {"embed/embedding", "posembed_output/pos_embedding"}


def _lm_loss(out, y):
    return alearn.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _flat(tree) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(str(getattr(k, "key", k)) for k in p): a for p, a in flat}


def _rel_diffs(got, want) -> dict:
    """``{path: max|got - want| / max over all of |want|}`` (same paths required)."""
    g, w = _flat(got), _flat(want)
    assert set(g) == set(w), sorted(set(g) ^ set(w))
    scale = max(float(jnp.abs(a).max()) for a in w.values())
    assert scale > 0
    return {k: float(jnp.abs(g[k] - w[k]).max()) / scale for k in w}


def _overlay(dst: dict, src: dict) -> dict:
    """``dst`` with every leaf that ``src`` also has (same path) taken from ``src``."""
    out = dict(dst)
    for k, v in src.items():
        if k in out:
            out[k] = _overlay(out[k], v) if isinstance(v, dict) else v
    return out


def _init(model, inputs, jit: bool = False, **wrap_kw):
    wrapped = alearn.wrap(model, **wrap_kw)
    rule = alearn.rules.create("dfa")
    init = lambda k: wrapped.init(k, *inputs, rule=rule)  # noqa: E731
    v = (jax.jit(init) if jit else init)(jax.random.key(0))
    return wrapped, rule, v


# ----------------------------------------------------------------------------------------
# 1. the LM with receivers on its sub-blocks = the oracle
# ----------------------------------------------------------------------------------------


def test_oracle_lm_sub_block_receivers_with_jacobian_feedback_is_bp():
    """The oracle's self-check in the new mode: receivers on the attention and MLP outputs
    with D = ∂output/∂activation (batch 1) give exactly BP, and the feedback points are
    the wrapper's leaves (``D`` at query/out/Dense_0/Dense_1/embed, ``D_out`` at each
    attention and MLP module)."""
    model, (tok,), y = zoo.make("transformer_lm")
    params = jax.jit(lambda k: model.init(k, tok))(jax.random.key(0))["params"]
    _, points = O.feedback_points(O.lm_forward, params, (tok,), receivers=O.LM_SUB_BLOCKS)
    want = {("embed",)}
    for b in ("block_0", "block_1"):
        want |= {(b, MHA, "query"), (b, MHA, "out"), (b, "LMMlpBlock_0", "Dense_0"),
                 (b, "LMMlpBlock_0", "Dense_1"), (b, MHA, O.OUT), (b, "LMMlpBlock_0", O.OUT)}
    assert set(points) == want

    @jax.jit
    def check(params, tok1, y1):
        kw = dict(receivers=O.LM_SUB_BLOCKS)
        fb = O.jacobian_feedback(O.lm_forward, params, (tok1,), **kw)
        dfa, _ = O.lm_dfa(params, fb, tok1, _lm_loss, y1, **kw)
        bp = jax.grad(lambda p: _lm_loss(model.apply({"params": p}, tok1), y1))(params)
        return dfa, bp

    dfa, bp = check(params, tok[:1], y[:1])
    assert max(_rel_diffs(dfa, bp).values()) <= 1e-5


def test_dfa_on_the_lm_with_sub_block_receivers_is_pure_dfa():
    """``alearn.value_and_updates`` with DFA on the lm1b-style LM wrapped as
    ``WRAP_LM`` = the independent oracle, every parameter, float32 precision; the feedback
    tree is exactly the oracle's points; and random D is far from BP (not a trivial
    match)."""
    model, (tok,), y = zoo.make("transformer_lm")
    wrapped, rule, v = _init(model, (tok,), **WRAP_LM)
    _, points = O.feedback_points(O.lm_forward, v["params"], (tok,),
                                  receivers=O.LM_SUB_BLOCKS)
    leaves = {tuple(k.split("/")) for k in _flat(v["feedback"])}
    assert leaves == {(*p, l) for p, l in map(O.leaf_of, points)}

    @jax.jit
    def run(v):
        (_, _, _), upd = alearn.value_and_updates(_lm_loss, wrapped, rule, v, tok, targets=y,
                                                  train=False)
        want, _ = O.lm_dfa(v["params"], v["feedback"], tok, _lm_loss, y,
                           receivers=O.LM_SUB_BLOCKS)
        bp = jax.grad(lambda p: _lm_loss(model.apply({"params": p}, tok), y))(v["params"])
        return upd["params"], want, bp

    got, want, bp = run(v)
    diffs = _rel_diffs(got, want)
    assert max(diffs.values()) <= 1e-5, {k: d for k, d in diffs.items() if d > 1e-5}
    assert max(_rel_diffs(want, bp).values()) > 0.1
    assert all(float(jnp.abs(a).max()) > 0 for a in jax.tree.leaves(want))


# ----------------------------------------------------------------------------------------
# 2. stop_gradient on the shortcuts
# ----------------------------------------------------------------------------------------


class ResNetBlock(zoo.ResNetBlock):
    """``zoo.ResNetBlock`` but ``residual = stop_gradient(x)`` (identity and projection
    shortcut). Same class name, so ``zoo.ResNet(block_cls=...)`` names it
    ``ResNetBlock_<i>`` and the parameter tree is the zoo's."""

    @nn.compact
    def __call__(self, x):
        residual = jax.lax.stop_gradient(x)
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        if self.zero_init_residual:
            y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        else:
            y = self.norm()(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class DecoderBlock(zoo.DecoderBlock):
    """``zoo.DecoderBlock`` with ``stop_gradient`` on the stream operand of both residual
    adds: ``x = a + sg(inputs)``, ``return sg(x) + z``."""

    @nn.compact
    def __call__(self, inputs, decoder_mask=None):
        x = nn.LayerNorm()(inputs)
        x = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
            use_bias=False, broadcast_dropout=False, dropout_rate=self.dropout_rate,
            deterministic=self.deterministic)(x, mask=decoder_mask)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=self.deterministic)
        x = x + jax.lax.stop_gradient(inputs)
        z = nn.LayerNorm()(x)
        z = zoo.LMMlpBlock(self.mlp_dim, self.dropout_rate, self.deterministic)(z)
        return jax.lax.stop_gradient(x) + z


class TransformerLM(zoo.TransformerLM):
    """``zoo.TransformerLM`` built from the ``DecoderBlock`` above (same parameter tree)."""

    @nn.compact
    def __call__(self, tokens, deterministic: bool = True):
        embed = nn.Embed(num_embeddings=self.vocab_size, features=self.emb_dim,
                         embedding_init=nn.initializers.normal(stddev=1.0), name="embed")
        decoder_mask = nn.make_causal_mask(tokens)
        y = embed(tokens.astype("int32"))
        y = zoo.AddPositionEmbs(self.max_len, name="posembed_output")(y)
        y = nn.Dropout(rate=self.dropout_rate)(y, deterministic=deterministic)
        for i in range(self.num_layers):
            y = DecoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, deterministic,
                             name=f"block_{i}")(y, decoder_mask=decoder_mask)
        y = nn.LayerNorm(name="encoderdecoder_norm")(y)
        logits = embed.attend(y.astype(jnp.float32))
        return logits / jnp.sqrt(y.shape[-1])


def _pair_updates(model, variant, inputs, wrap_kw, loss_fn, targets, **vu_kw):
    """DFA updates of the model and of its stop_gradient variant, wrapped alike, with the
    model's variables (the variant's init supplies only feedback leaves the model lacks),
    plus the variant's own feedback-only leaves (paths). Both inits are jitted: see
    ``test_eager_and_jitted_init_agree_on_a_stop_gradient_shortcut``."""
    wrapped, rule, v = _init(model, inputs, jit=True, **wrap_kw)
    wrapped2, _, v2 = _init(variant, inputs, jit=True, **wrap_kw)
    assert jax.tree.structure(v2["params"]) == jax.tree.structure(v["params"])
    extra = sorted(set(_flat(v2["feedback"])) - set(_flat(v["feedback"])))
    v2 = {**v, "feedback": _overlay(v2["feedback"], v["feedback"])}

    @jax.jit
    def run(v, v2):
        outs = []
        for w, vv in ((wrapped, v), (wrapped2, v2)):
            (loss, _, _), upd = alearn.value_and_updates(loss_fn, w, rule, vv, *inputs,
                                                         targets=targets, **vu_kw)
            outs.append((loss, upd["params"]))
        return outs

    (l1, u1), (l2, u2) = run(v, v2)
    assert float(l1) == float(l2)  # the forward passes are the same
    return u1, u2, extra, v


def test_resnet_stop_gradient_on_the_shortcut_changes_no_dfa_update():
    """ResNet, ``blocks=("ResNetBlock_*",)``: the receiver at each block input replaces
    *all* the gradient arriving there (main branch through Conv_0 and the shortcut alike),
    so pure DFA implies ``stop_gradient`` on the shortcut's input (``residual = sg(x)``,
    both the identity and the ``conv_proj`` shortcut): every update is unchanged (BatchNorm
    in train mode). Not implied (and not tested): ``sg`` on the block's output or the main
    branch (``sg(y)``), or after ``conv_proj``/``norm_proj``: those would cut the error
    that trains Conv_1/BatchNorm_1 or the projection's own kernel and norm.

    In the variant ``conv_proj`` reads ``sg(x)``, a new array, not the block input that
    Conv_0 read, so the wrapper gives it a ``D`` of its own (it "sends", into the
    ``stop_gradient``): a feedback leaf the original lacks, dead weight, asserted here."""
    model, (x,), y = zoo.make("resnet")
    u1, u2, extra, _ = _pair_updates(model, _resnet_variant(), (x,), WRAP_RESNET,
                                     alearn.cross_entropy, y)
    assert extra == ["ResNetBlock_1/conv_proj/D"]
    diffs = _rel_diffs(u2, u1)
    assert max(diffs.values()) <= 1e-6, {k: d for k, d in diffs.items() if d > 1e-6}


def _resnet_variant():
    return zoo.ResNet(stage_sizes=(1, 1), num_classes=zoo.RESNET_CLASSES, num_filters=4,
                      zero_init_residual=False, block_cls=ResNetBlock)


def test_eager_and_jitted_init_agree_on_a_stop_gradient_shortcut():
    """A wrapped model's feedback layout must not depend on whether init is jitted: layer
    inputs are judged by array identity, and ``lax.stop_gradient(x) is x`` holds outside a
    trace, so ``Wrapped.init`` traces the model (jit) as every apply does."""
    _, (x,), _ = zoo.make("resnet")
    _, _, eager = _init(_resnet_variant(), (x,), **WRAP_RESNET)
    _, _, jitted = _init(_resnet_variant(), (x,), jit=True, **WRAP_RESNET)
    assert jax.tree.structure(eager["feedback"]) == jax.tree.structure(jitted["feedback"])


def test_lm_stop_gradient_on_the_stream_changes_no_dfa_update_with_an_embedding_receiver():
    """LM, receivers on every attention and MLP output *and* on the embedding output
    (``WRAP_LM_EMB``). In pure DFA a parameter is trained by the signal injected at the
    nearest receiving point above it (a receiver, or the input of a layer that sends
    ``e·D``), through non-layer ops only. Here every gradient on the residual stream ends at
    a receiver (a sub-block's output, the embedding's), which replaces it: the stream is
    dead, so pure DFA implies ``stop_gradient`` on the stream operand of each residual add
    (tested: every update unchanged), and would equally allow it on a LayerNorm's input.
    Not implied: ``sg`` between a receiving point and what it trains (a sub-block's
    output, a LayerNorm's output)."""
    model, (tok,), y = zoo.make("transformer_lm")
    u1, u2, extra, _ = _pair_updates(model, TransformerLM(), (tok,), WRAP_LM_EMB, _lm_loss, y,
                                     train=False)
    assert extra == []
    diffs = _rel_diffs(u2, u1)
    assert max(diffs.values()) <= 1e-6, {k: d for k, d in diffs.items() if d > 1e-6}


def test_lm_stop_gradient_on_the_stream_changes_only_the_embeddings_under_wrap_lm():
    """LM wrapped as ``WRAP_LM`` (receivers on the attention and MLP outputs only): the
    stream below block_0 has no receiver, so the token-embedding lookup and the position
    embedding take the stream's autodiff gradient, the sum over every layer above of its
    D signal through the LayerNorm it feeds (and the final norm's). ``sg`` on the stream
    is therefore *not* implied there: those two updates change (to the first LayerNorm's
    signal alone), every other update is unchanged. The variant's updates are the oracle's
    with ``stop_shortcuts=True`` (the change is the specification, not a wrapper fault).
    ``WRAP_LM_EMB`` (test above) is the wrap under which the claim holds everywhere."""
    model, (tok,), y = zoo.make("transformer_lm")
    u1, u2, extra, v = _pair_updates(model, TransformerLM(), (tok,), WRAP_LM, _lm_loss, y,
                                     train=False)
    assert extra == []
    diffs = _rel_diffs(u2, u1)
    same = {k: d for k, d in diffs.items() if k not in STREAM_PARAMS}
    assert max(same.values()) <= 1e-6, {k: d for k, d in same.items() if d > 1e-6}
    assert all(diffs[k] > 1e-2 for k in STREAM_PARAMS), {k: diffs[k] for k in STREAM_PARAMS}
    want, _ = jax.jit(lambda v: O.lm_dfa(v["params"], v["feedback"], tok, _lm_loss, y,
                                         receivers=O.LM_SUB_BLOCKS, stop_shortcuts=True))(v)
    assert max(_rel_diffs(u2, want).values()) <= 1e-5


# ----------------------------------------------------------------------------------------
# 3. 100 steps of DFA lower the loss
# ----------------------------------------------------------------------------------------


def _train(wrapped, rule, v, inputs, targets, loss_fn, opt, steps=100):
    train_vars = alearn.trainable(rule, v)
    fixed = {k: a for k, a in v.items() if k not in train_vars}
    state = opt.init(train_vars)

    @jax.jit
    def step(train_vars, fixed, state):
        (loss, _, new), upd = alearn.value_and_updates(
            loss_fn, wrapped, rule, {**fixed, **train_vars}, *inputs, targets=targets)
        delta, state = opt.update(upd, state, train_vars)
        return optax.apply_updates(train_vars, delta), {**fixed, **new}, state, loss

    losses = []
    for _ in range(steps):
        train_vars, fixed, state, loss = step(train_vars, fixed, state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    return np.array(losses)


def test_dfa_100_steps_lower_the_resnet_loss():
    model, (x,), y = zoo.make("resnet")
    wrapped, rule, v = _init(model, (x,), **WRAP_RESNET)
    losses = _train(wrapped, rule, v, (x,), y, alearn.cross_entropy, optax.adam(1e-2))
    # (measured: 1.87 -> 0.027, BatchNorm in train mode, one fixed batch of 4)
    assert losses[-5:].mean() < 0.25 * losses[:5].mean(), losses


def test_dfa_100_steps_lower_the_lm_loss():
    model, (tok,), y = zoo.make("transformer_lm")
    wrapped, rule, v = _init(model, (tok,), **WRAP_LM)
    losses = _train(wrapped, rule, v, (tok,), y, _lm_loss, optax.adam(1e-2))
    # (measured: 3.76 -> 2.53 on one fixed batch of 4 x 8 random tokens, V = 32)
    assert losses[-5:].mean() < 0.8 * losses[:5].mean(), losses
    assert losses[-5:].mean() < np.log(32) - 0.5, losses  # well below uniform guessing
