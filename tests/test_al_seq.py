"""Oracles for the AL sequence models (al_lstm, al_transformer; alearn.al.seq).

The reference LSTM / encoder / pooling below are written with jnp on the parameter dicts
(a Python loop over time, explicit LayerNorm, softmax and tanh-GELU), not from
``alearn.al.seq``; a sequence activation is a (features, mask) pair there, not the
library's extra mask channel. The AL step around them is ``tests/_al_reference``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alearn.al as al

import _al_reference as ref
from _al_seq_fixtures import CLASSES, KW, _net, _states, _tokens


# ---- reference layers on parameter dicts --------------------------------------------------
def r_embed(p, ids):
    h = p["tokens"]["embedding"][ids]
    if "positions" in p:
        h = h + p["positions"][: ids.shape[1]]
    return h, (ids != 0).astype(jnp.float32)


def r_lstm(p, s):
    h_seq, mask = s
    d = p["kernel_h"].shape[0]
    h = c = jnp.zeros((h_seq.shape[0], d))
    outs = []
    for t in range(h_seq.shape[1]):
        z = h_seq[:, t] @ p["kernel_i"] + h @ p["kernel_h"] + p["bias"]
        i, f, g, o = (z[:, k * d:(k + 1) * d] for k in range(4))
        sig = lambda v: 1 / (1 + jnp.exp(-v))  # noqa: E731
        c_new = sig(f) * c + sig(i) * jnp.tanh(g)
        h_new = sig(o) * jnp.tanh(c_new)
        m = mask[:, t:t + 1]
        h, c = jnp.where(m > 0, h_new, h), jnp.where(m > 0, c_new, c)
        outs.append(h)
    return jnp.stack(outs, 1), mask


def r_layernorm(p, x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def r_encoder(p, s, heads):
    h, mask = s
    b, t, d = h.shape
    dh = d // heads
    lin = lambda name, x: x @ p[name]["kernel"] + p[name].get("bias", 0.0)  # noqa: E731
    a = r_layernorm(p["ln_attn"], h)
    outs = []
    for hd in range(heads):
        sl = slice(hd * dh, (hd + 1) * dh)
        q, k, v = (lin(n, a)[..., sl] for n in ("query", "key", "value"))
        logits = q @ jnp.swapaxes(k, 1, 2) / math.sqrt(dh) - 1e9 * (1 - mask[:, None, :])
        w = jnp.exp(logits - logits.max(-1, keepdims=True))
        outs.append((w / w.sum(-1, keepdims=True)) @ v)
    h = h + lin("out", jnp.concatenate(outs, -1))
    m = lin("mlp_in", r_layernorm(p["ln_mlp"], h))
    m = 0.5 * m * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (m + 0.044715 * m ** 3)))
    return h + lin("mlp_out", m), mask


def r_mean_pool(s):
    h, mask = s
    return (h * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1)


def _ref_blocks(name, depth=2):
    sig = jax.nn.sigmoid
    layer = (r_lstm if name == "al_lstm"
             else functools.partial(r_encoder, heads=KW[name].get("heads", 1)))
    key = "LSTM_0" if name == "al_lstm" else "Encoder_0"

    def f(first):
        def fn(p, st, x):
            s = r_embed(p["SeqEmbed_0"], x) if first else x
            return layer(p[key], s), st
        return fn

    common = dict(g=lambda p, y: sig(ref.dense(p["Dense_0"], y)),
                  h=lambda p, y: sig(ref.dense(p["Dense_0"], y)),
                  b=lambda p, st, s: (sig(ref.dense(p["Dense_0"], r_mean_pool(s))), st))
    return [ref.RefBlock(f=f(i == 0), **common) for i in range(depth)]


def _knobs(net, lr):
    bd = net.blocks[0]
    return ref.Knobs(lr=lr, ae_lr_mult=2.0, reduction=bd.assoc_reduction,
                     weight_decay=bd.weight_decay, l2_parts=("f",),
                     assoc_trains_g=bd.assoc_trains_g)


# ---- oracles ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["al_lstm", "al_transformer"])
def test_seq_al_steps_equal_plain_jax_reference_whole_and_per_block(name):
    """3 AL steps on padded token batches: the jitted whole-network step and the per-block
    jitted steps both equal the reference (LSTM / encoder / masked pool by hand)."""
    net, states0 = _net(name), _states(name)
    batches = [_tokens(seed=t) for t in range(3)]
    params = [st.params for st in states0]
    stats = [st.model_state for st in states0]
    opt = ref.init_opt(params)
    rstep = jax.jit(lambda p, s, o, x, lab: ref.train_step(_ref_blocks(name), _knobs(net, 1e-2),
                                                           p, s, o, x, CLASSES, lab))
    whole = jax.jit(functools.partial(al.train_step, net))
    steps = [al.make_block_step(bd) for bd in net.blocks]
    a, b = states0, list(states0)
    for x, labels in batches:
        params, stats, opt, losses = rstep(params, stats, opt, x, labels)
        a, metrics = whole(a, x, labels)
        s, y = x, al.targets(net, labels)
        for i, step in enumerate(steps):
            b[i], s, y, _ = step(b[i], s, y)
    for got in (a, b):
        for st, p in zip(got, params):
            for path, u in jax.tree_util.tree_leaves_with_path(st.params):
                keys = tuple(k.key for k in path)
                v = functools.reduce(lambda t, k: t[k], keys, p)
                np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=2e-4, atol=2e-5,
                                           err_msg=str(keys))
    for i, (assoc, ae) in enumerate(losses):
        np.testing.assert_allclose(float(metrics[f"assoc_loss_{i + 1}"]), float(assoc), rtol=1e-4)
        np.testing.assert_allclose(float(metrics[f"ae_loss_{i + 1}"]), float(ae), rtol=1e-4)
    moved = max(float(jnp.abs(u - v).max()) for u, v in
                zip(jax.tree.leaves(params[1]["f"]), jax.tree.leaves(states0[1].params["f"])))
    assert moved > 1e-2  # the oracle can fail: block 2's f moved far beyond the tolerance


@pytest.mark.parametrize("name", ["al_lstm", "al_transformer"])
def test_seq_gradients_never_cross_blocks(name):
    """d(L_i or L'_i)/d(params of block j) = 0 for j != i, computed from the raw tokens
    through blocks < i without any stop_gradient of ours; own parts get a gradient."""
    net, states = _net(name), _states(name)
    x, labels = _tokens(seed=4)
    ref.check_no_cross_block_gradients(net, states, [st.params for st in states], x, labels)
