"""alearn.wrap_nnx coverage: attention/recurrent/Einsum/ConvTranspose/Embed.attend routed,
no silent BP (uncovered parameters raise at wrap time), DFA with δ_L up front inside
nnx.scan, and explicit-sharding (MiniGPT-like) models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import alearn
from alearn.wrappers import _nnx_call, _nnx_layers

KEY = jax.random.key(0)


def _ce(out, y):
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()


def _rel(a, b):
    num = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                             jax.tree.leaves(b)))
    den = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b))
    return num / den


class Attn(nnx.Module):
    """Embed lookup + MHA (LinearGeneral) + LayerNorm + Einsum + ConvTranspose + tied head."""

    def __init__(self, rngs, vocab=11, d=8):
        self.emb = nnx.Embed(vocab, d, rngs=rngs)
        self.mha = nnx.MultiHeadAttention(2, d, qkv_features=8, decode=False, rngs=rngs)
        self.norm = nnx.LayerNorm(d, rngs=rngs)
        self.mix = nnx.Einsum("btd,df->btf", (d, d), (d,), rngs=rngs)
        self.up = nnx.ConvTranspose(d, d, (2,), padding="SAME", rngs=rngs)
        self.gen = nnx.LinearGeneral(d, (2, 4), rngs=rngs)

    def __call__(self, tok):
        h = self.emb(tok)
        h = h + self.mha(h, mask=nnx.make_causal_mask(tok))
        h = jnp.tanh(self.mix(self.norm(h)))
        h = jnp.tanh(self.up(h))
        h = self.gen(h).reshape(h.shape)
        return self.emb.attend(h)


def _kernels(model) -> int:
    return sum(1 for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)
               and str(path[-1]) in ("kernel", "embedding"))


def _routed(model) -> list:
    return [m for _, m in nnx.iter_graph(model) if hasattr(m, _nnx_call.ID)]


def test_attention_every_kernel_routed_and_fa_with_b_equal_w_is_bp():
    tok = jax.random.randint(KEY, (3, 5), 0, 11)
    y = jax.random.randint(jax.random.key(1), (3, 5), 0, 11)
    plain = Attn(nnx.Rngs(0))
    model = alearn.wrap_nnx(Attn(nnx.Rngs(0)), alearn.rules.create("fa"), tok, KEY)
    # by construction: emb (lookup + attend), q/k/v/out, mix, up, gen
    assert _kernels(plain) == 8 == len(_routed(model))
    assert all(isinstance(getattr(m, "B", None), alearn.Feedback) for m in _routed(model))
    for m in _routed(model):  # B := W
        m.B[...] = getattr(m, _nnx_layers.KERNEL[_nnx_layers.routed_base(type(m))])[...]
    (loss, _), g = alearn.nnx_value_and_updates(_ce, model, tok, y)
    want = nnx.grad(lambda m: _ce(m(tok), y))(plain)
    got = nnx.state(model.model, nnx.Param)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert _rel(g["model"], want) <= 1e-6
    assert jnp.isfinite(loss)


class Rec(nnx.Module):
    def __init__(self, rngs, d=4, h=5):
        self.lstm = nnx.RNN(nnx.LSTMCell(d, h, rngs=rngs))
        self.opt = nnx.RNN(nnx.OptimizedLSTMCell(h, h, rngs=rngs))
        self.gru = nnx.RNN(nnx.GRUCell(h, h, rngs=rngs))
        self.simple = nnx.RNN(nnx.SimpleCell(h, h, rngs=rngs))
        self.head = nnx.Linear(h, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(self.simple(self.gru(self.opt(self.lstm(x))))[:, -1])


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_recurrent_cells_every_kernel_routed(rule):
    x = jax.random.normal(KEY, (2, 3, 4))
    y = jnp.array([0, 2])
    # DFA through time: the cell state carries later steps' signals (a recurrence, which
    # the shortcut check refuses unless accepted)
    model = alearn.wrap_nnx(Rec(nnx.Rngs(0)), alearn.rules.create(rule), x, KEY,
                            dfa_shortcuts="allow")
    assert len(_routed(model)) == _kernels(model) == 8 + 2 + 2 + 2 + 1  # LSTM: 8 gates; others: dense_i, dense_h
    if rule == "fa":
        assert all(hasattr(m, "B") for m in _routed(model))
        return
    else:  # the cell's input and h feed several gates: only the first consumer owns D
        assert 0 < sum(hasattr(m, "D") for m in _routed(model)) < len(_routed(model))
    (loss, _), g = alearn.nnx_value_and_updates(_ce, model, x, y)
    leaves = jax.tree.leaves(g)
    assert jnp.isfinite(loss) and all(bool(jnp.all(jnp.isfinite(v))) for v in leaves)
    assert float(jnp.abs(g["model"]["lstm"]["cell"]["ii"]["kernel"][...]).sum()) > 0


class Block(nnx.Module):
    def __init__(self, rngs, h=6):
        self.lin = nnx.Linear(h, h, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.lin(x))


class ScanMLP(nnx.Module):
    def __init__(self, rngs, n=2, d=5, h=6, c=3):
        self.inp = nnx.Linear(d, h, rngs=rngs)

        @nnx.split_rngs(splits=n)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(r):
            return Block(r, h)
        self.blocks = make(rngs)
        self.out = nnx.Linear(h, c, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(h, blk):
            return blk(h)
        return self.out(body(jax.nn.relu(self.inp(x)), self.blocks))


def test_dfa_in_nnx_scan_equals_hand_written_dfa():
    x = jax.random.normal(KEY, (4, 5))
    y = jnp.array([0, 1, 2, 1])
    model = alearn.wrap_nnx(ScanMLP(nnx.Rngs(0)), alearn.rules.create("dfa"), x, KEY)
    m = model.model
    assert m.blocks.lin.D.shape == (2, 3, 6)  # stacked like the kernel: one D per block
    (_, out), g = alearn.nnx_value_and_updates(_ce, model, x, y)
    # plain-JAX DFA: δ_l = relu'(a_l) ⊙ (e D_{l+1}), D_{l+1} of the layer reading h_l
    w = [m.inp.kernel[...]] + [m.blocks.lin.kernel[i] for i in range(2)] + [m.out.kernel[...]]
    b = [m.inp.bias[...]] + [m.blocks.lin.bias[i] for i in range(2)] + [m.out.bias[...]]
    d = [m.blocks.lin.D[i] for i in range(2)] + [m.out.D[...]]
    hs, acts = [x], []
    for k in range(3):
        acts.append(hs[-1] @ w[k] + b[k])
        hs.append(jax.nn.relu(acts[-1]))
    logits = hs[-1] @ w[3] + b[3]
    e = jax.grad(lambda o: _ce(o, y))(logits)
    deltas = [(acts[k] > 0) * (e @ d[k]) for k in range(3)] + [e]
    want_w = [hs[k].T @ deltas[k] for k in range(4)]
    want_b = [deltas[k].sum(0) for k in range(4)]
    gm = g["model"]
    got_w = [gm["inp"]["kernel"][...], gm["blocks"]["lin"]["kernel"][...][0],
             gm["blocks"]["lin"]["kernel"][...][1], gm["out"]["kernel"][...]]
    got_b = [gm["inp"]["bias"][...], gm["blocks"]["lin"]["bias"][...][0],
             gm["blocks"]["lin"]["bias"][...][1], gm["out"]["bias"][...]]
    assert jnp.allclose(logits, out, atol=1e-6)
    assert _rel(got_w + got_b, want_w + want_b) <= 1e-5


class Custom(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(4, 4, rngs=rngs)
        self.proj = nnx.Param(jax.random.normal(rngs.params(), (4, 3)))

    def __call__(self, x):
        return jnp.tanh(self.lin(x)) @ self.proj[...]


def test_uncovered_parameter_raises_and_exclude_silences():
    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match=r"\['proj'\].*exclude="):
        alearn.wrap_nnx(Custom(nnx.Rngs(0)), alearn.rules.create("fa"), x, KEY)
    alearn.wrap_nnx(Custom(nnx.Rngs(0)), alearn.rules.BP(), x, KEY)  # BP: no check
    model = alearn.wrap_nnx(Custom(nnx.Rngs(0)), alearn.rules.create("fa"), x, KEY,
                            exclude=("proj",))
    (_, _), g = alearn.nnx_value_and_updates(lambda o: (o ** 2).sum(), model, x)
    assert float(jnp.abs(g["model"]["proj"][...]).sum()) > 0


def _part(*names):
    return lambda init: nnx.with_partitioning(init, names)


class MiniGPT(nnx.Module):
    """The Flax MiniGPT tutorial's shapes, shrunk: token+position Embed, one block of
    causal MultiHeadAttention + LayerNorm + Linear FFN, output Linear; partitioned."""

    def __init__(self, rngs, vocab=13, maxlen=6, d=8, heads=2, ff=16):
        k, e = nnx.initializers.xavier_uniform(), nnx.initializers.normal(0.02)
        self.tok = nnx.Embed(vocab, d, embedding_init=_part(None, "model")(e), rngs=rngs)
        self.pos = nnx.Embed(maxlen, d, embedding_init=_part(None, "model")(e), rngs=rngs)
        self.mha = nnx.MultiHeadAttention(
            heads, d, kernel_init=_part(None, "model")(k), decode=False, rngs=rngs)
        self.ln1 = nnx.LayerNorm(d, scale_init=_part("model")(nnx.initializers.ones_init()),
                                 rngs=rngs)
        self.ff1 = nnx.Linear(d, ff, kernel_init=_part(None, "model")(k), rngs=rngs)
        self.ff2 = nnx.Linear(ff, d, kernel_init=_part(None, "model")(k), rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, rngs=rngs)
        self.head = nnx.Linear(d, vocab, kernel_init=_part(None, "model")(k), rngs=rngs)

    def __call__(self, t):
        h = self.tok(t) + self.pos(jnp.arange(t.shape[1]))[None]
        mask = nnx.make_causal_mask(t)
        h = self.ln1(h + self.mha(h, mask=mask))
        h = self.ln2(h + self.ff2(jax.nn.relu(self.ff1(h))))
        return self.head(h)


def _ce_onehot(out, y):  # no gather: logits sharded over the vocabulary under the mesh
    return optax.softmax_cross_entropy(out, jax.nn.one_hot(y, out.shape[-1])).mean()


def test_minigpt_under_explicit_mesh_trains_every_rule_and_bp_is_nnx_grad():
    mesh = jax.make_mesh((1, 1), ("batch", "model"), devices=jax.devices()[:1],
                         axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    t = jax.random.randint(KEY, (4, 6), 0, 13)
    y = jnp.roll(t, -1, axis=1)
    with jax.set_mesh(mesh):
        for name in ("bp", "fa", "dfa", "kp"):
            rule = alearn.rules.create(name)
            # DFA: receivers on the sub-blocks writing into the residual stream
            model = alearn.wrap_nnx(MiniGPT(nnx.Rngs(0)), rule, t, KEY,
                                    receivers=("mha", "ff2"))
            opt = nnx.Optimizer(model, alearn.nnx_transform(rule, optax.sgd(0.1), model),
                                wrt=alearn.nnx_trainable(rule))

            @nnx.jit
            def step(model, opt):
                (loss, _), g = alearn.nnx_value_and_updates(_ce_onehot, model, t, y)
                opt.update(model, g)
                return loss, g

            loss, g = step(model, opt)
            assert jnp.isfinite(loss), name
            if name == "fa":  # B is laid out like the kernel it serves
                assert model.model.ff1.B.get_metadata()["out_sharding"] == (None, "model")
            if name == "bp":
                plain = MiniGPT(nnx.Rngs(0))
                want = nnx.grad(lambda m: _ce_onehot(m(t), y))(plain)
                assert _rel(g["model"], want) <= 1e-6
