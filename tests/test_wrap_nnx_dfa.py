"""alearn.wrap_nnx under DFA: receivers (blocks= at module inputs, receivers= at outputs),
the wrap-time shortcut check, several inputs (targets=), output= for (logits, aux), and
the error for a StateAxes that forgets alearn.Feedback.

Oracle: a hand-written plain-JAX pure DFA of a residual MLP (a receiver at every block
input replaces the gradient arriving there by e·D; each layer sends e·D to its input
instead of Wᵀδ; a layer reading a receiver's output sends nothing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import alearn
from tests import _flax_zoo as zoo

KEY = jax.random.key(0)
DFA = alearn.rules.create("dfa")


def _ce(out, y):
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()


def _rel(a, b):
    num = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                             jax.tree.leaves(b)))
    den = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b))
    return num / den


class Res(nnx.Module):
    """x + lin2(relu(lin1(x)))."""

    def __init__(self, rngs, h=6):
        self.lin1 = nnx.Linear(h, h, rngs=rngs)
        self.lin2 = nnx.Linear(h, h, rngs=rngs)

    def __call__(self, x):
        return x + self.lin2(jax.nn.relu(self.lin1(x)))


class ResMLP(nnx.Module):
    def __init__(self, rngs, n=2, d=5, h=6, c=3):
        self.inp = nnx.Linear(d, h, rngs=rngs)
        self.blocks = nnx.List([Res(rngs, h) for _ in range(n)])
        self.out = nnx.Linear(h, c, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.inp(x))
        for blk in self.blocks:
            h = blk(h)
        return self.out(h)


class ScanResMLP(nnx.Module):
    """The same net with its blocks stacked by nnx.vmap and applied by nnx.scan under a
    StateAxes: "fixed" maps Feedback like Param, "param" maps Param only, "broadcast"
    maps Param and broadcasts the rest."""

    def __init__(self, rngs, axes="fixed", n=2, d=5, h=6, c=3):
        self.inp = nnx.Linear(d, h, rngs=rngs)

        @nnx.split_rngs(splits=n)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(r):
            return Res(r, h)
        self.blocks = make(rngs)
        self.out = nnx.Linear(h, c, rngs=rngs)
        self.axes = axes

    def __call__(self, x):
        axes = {"fixed": {(nnx.Param, alearn.Feedback): 0, ...: None},
                "param": {nnx.Param: 0}, "broadcast": {nnx.Param: 0, ...: None}}[self.axes]

        @nnx.scan(in_axes=(nnx.Carry, nnx.StateAxes(axes)), out_axes=nnx.Carry)
        def body(h, blk):
            return blk(h)
        return self.out(body(jax.nn.relu(self.inp(x)), self.blocks))


def pure_dfa(x, y, inp, blocks, out, d_recv, d_lin2):
    """Updates of pure DFA: ``inp``/``out`` (W, b), ``blocks`` [(W1, b1, W2, b2)],
    ``d_recv[k]``: D of the receiver at block k's input, ``d_lin2[k]``: D of its lin2,
    ``out``'s D is the last entry of ``d_recv`` (the head reads the last block output)."""
    a0 = x @ inp[0] + inp[1]
    us, zs = [jax.nn.relu(a0)], []
    for w1, b1, w2, b2 in blocks:
        z = us[-1] @ w1 + b1
        zs.append(z)
        us.append(us[-1] + jax.nn.relu(z) @ w2 + b2)
    logits = us[-1] @ out[0] + out[1]
    e = jax.grad(lambda o: _ce(o, y))(logits)
    g_out = {"kernel": us[-1].T @ e, "bias": e.sum(0)}
    g_blocks = []
    for k, (z, u) in enumerate(zip(zs, us)):
        g = e @ d_recv[k + 1]  # what reaches the block output: the next receiver's e·D
        dz = (z > 0) * (e @ d_lin2[k])  # lin2 sends e·D to relu(z); lin1 sends nothing
        g_blocks.append({"lin1": {"kernel": u.T @ dz, "bias": dz.sum(0)},
                         "lin2": {"kernel": jax.nn.relu(z).T @ g, "bias": g.sum(0)}})
    da0 = (a0 > 0) * (e @ d_recv[0])
    return {"inp": {"kernel": x.T @ da0, "bias": da0.sum(0)}, "blocks": g_blocks,
            "out": g_out}, logits


def _data():
    x = jax.random.normal(KEY, (4, 5))
    return x, jnp.array([0, 1, 2, 1])


def test_dfa_on_a_residual_mlp_with_blocks_is_pure_dfa():
    x, y = _data()
    model = alearn.wrap_nnx(ResMLP(nnx.Rngs(0)), DFA, x, KEY, blocks=("blocks/*",))
    m = model.model
    for blk in m.blocks:  # receiver D at the block input; lin1 reads it: no D
        assert blk.D.shape == (3, 6) and not hasattr(blk.lin1, "D") and blk.lin2.D.shape == (3, 6)
    (_, out), g = alearn.nnx_value_and_updates(_ce, model, x, y)
    p = lambda lin: (lin.kernel[...], lin.bias[...])  # noqa: E731
    want, logits = pure_dfa(
        x, y, p(m.inp), [p(b.lin1) + p(b.lin2) for b in m.blocks], p(m.out),
        [b.D[...] for b in m.blocks] + [m.out.D[...]], [b.lin2.D[...] for b in m.blocks])
    gm = g["model"]
    got = {"inp": gm["inp"], "out": gm["out"], "blocks": [gm["blocks"][k] for k in range(2)]}
    got = jax.tree.map(lambda v: v[...], got)
    assert jnp.allclose(out, logits, atol=1e-6)
    assert _rel(got, want) <= 1e-5


def test_dfa_without_blocks_is_refused_naming_the_fix():
    x, _ = _data()
    with pytest.raises(ValueError, match=r"layer 'inp' reaches 3 receiving points.*blocks=\('blocks/\*',\)"):
        alearn.wrap_nnx(ResMLP(nnx.Rngs(0)), DFA, x, KEY)
    alearn.wrap_nnx(ResMLP(nnx.Rngs(0)), DFA, x, KEY, dfa_shortcuts="allow")
    alearn.wrap_nnx(ResMLP(nnx.Rngs(0)), alearn.rules.create("fa"), x, KEY)  # FA: no check


def test_dfa_receivers_in_nnx_scan_are_stacked_and_pure():
    """blocks= on an nnx.vmap-built stack applied by nnx.scan: D stacked per block."""
    x, y = _data()
    model = alearn.wrap_nnx(ScanResMLP(nnx.Rngs(0)), DFA, x, KEY, blocks=("blocks",))
    m = model.model
    assert m.blocks.D.shape == (2, 3, 6) and not hasattr(m.blocks.lin1, "D")
    (_, out), g = alearn.nnx_value_and_updates(_ce, model, x, y)
    p = lambda lin, i=None: tuple(v[...] if i is None else v[i]  # noqa: E731
                                  for v in (lin.kernel, lin.bias))
    want, logits = pure_dfa(
        x, y, p(m.inp), [p(m.blocks.lin1, i) + p(m.blocks.lin2, i) for i in range(2)],
        p(m.out), [m.blocks.D[i] for i in range(2)] + [m.out.D[...]],
        [m.blocks.lin2.D[i] for i in range(2)])
    gb = jax.tree.map(lambda v: v[...], g["model"]["blocks"])
    got = {"inp": g["model"]["inp"], "out": g["model"]["out"],
           "blocks": [jax.tree.map(lambda v, i=i: v[i], gb) for i in range(2)]}
    got = jax.tree.map(lambda v: v[...], got)
    assert jnp.allclose(out, logits, atol=1e-6)
    assert _rel(got, want) <= 1e-5


@pytest.mark.parametrize("axes", ["param", "broadcast"])
def test_state_axes_without_feedback_raise_the_fix(axes):
    x, _ = _data()
    fix = r"Map alearn.Feedback like nnx.Param.*StateAxes\(\{\(nnx.Param, alearn.Feedback\)"
    with pytest.raises(ValueError, match=fix):
        alearn.wrap_nnx(ScanResMLP(nnx.Rngs(0), axes), alearn.rules.create("fa"), x, KEY)
    model = alearn.wrap_nnx(ScanResMLP(nnx.Rngs(0)), alearn.rules.create("fa"), x, KEY)
    model.model.axes = axes  # the same mistake after wrapping: caught at call
    with pytest.raises(ValueError, match=fix):
        model(x)


def test_minigpt_under_dfa_needs_receivers_then_trains():
    model, (t,), y = zoo.make_minigpt()
    with pytest.raises(ValueError, match=r"'transformer_blocks/0/mha/out'.*receivers="):
        alearn.wrap_nnx(model, DFA, t, KEY)
    model, (t,), y = zoo.make_minigpt()
    recv = ("transformer_blocks/*/mha", "transformer_blocks/*/linear2")
    model = alearn.wrap_nnx(model, DFA, t, KEY, receivers=recv)
    blk = model.model.transformer_blocks[0]
    assert blk.mha.D_out.shape == blk.linear2.D_out.shape == (32, 16)  # position-wise
    opt = nnx.Optimizer(model, alearn.nnx_transform(DFA, optax.sgd(0.1), model),
                        wrt=alearn.nnx_trainable(DFA))

    @nnx.jit
    def step(model, opt):
        (loss, _), g = alearn.nnx_value_and_updates(
            lambda o, y: _ce(o.reshape(-1, o.shape[-1]), y.reshape(-1)), model, t,
            targets=y, training=True)
        opt.update(model, g)
        return loss, g

    loss, g = step(model, opt)
    assert jnp.isfinite(loss)
    leaves = jax.tree.leaves(g)
    assert all(bool(jnp.isfinite(v).all()) for v in leaves)
    assert float(jnp.abs(g["model"]["transformer_blocks"][0]["mha"]["query"]["kernel"][...]
                         ).sum()) > 0


class TwoInputs(nnx.Module):
    def __init__(self, rngs):
        self.la = nnx.Linear(5, 6, rngs=rngs)
        self.lb = nnx.Linear(2, 6, rngs=rngs)
        self.out = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, a, b):
        return self.out(jax.nn.relu(self.la(a) + self.lb(b)))


def test_several_inputs_with_targets():
    a, y = _data()
    b = jax.random.normal(jax.random.key(1), (4, 2))
    bp = alearn.wrap_nnx(TwoInputs(nnx.Rngs(0)), alearn.rules.BP(), (a, b), KEY)
    (loss, _), g = alearn.nnx_value_and_updates(_ce, bp, a, b, targets=y)
    want = nnx.grad(lambda m: _ce(m(a, b), y))(TwoInputs(nnx.Rngs(0)))
    assert _rel(g["model"], want) <= 1e-6
    model = alearn.wrap_nnx(TwoInputs(nnx.Rngs(0)), DFA, (a, b), KEY)
    m = model.model
    (loss2, _), g = alearn.nnx_value_and_updates(_ce, model, a, b, targets=(y,))
    assert jnp.allclose(loss, loss2)
    z = a @ m.la.kernel[...] + m.la.bias[...] + b @ m.lb.kernel[...] + m.lb.bias[...]
    e = jax.grad(lambda o: _ce(o, y))(jax.nn.relu(z) @ m.out.kernel[...] + m.out.bias[...])
    dz = (z > 0) * (e @ m.out.D[...])
    want = {"la": a.T @ dz, "lb": b.T @ dz, "out": jax.nn.relu(z).T @ e}
    got = {k: g["model"][k]["kernel"][...] for k in want}
    assert _rel(got, want) <= 1e-5


class WithAux(nnx.Module):
    def __init__(self, rngs, aux=True):
        self.l1 = nnx.Linear(5, 6, rngs=rngs)
        self.l2 = nnx.Linear(6, 3, rngs=rngs)
        self.aux = aux

    def __call__(self, x):
        h = jax.nn.relu(self.l1(x))
        return (self.l2(h), {"h": h}) if self.aux else self.l2(h)


def test_output_selects_the_logits_of_logits_and_aux():
    x, y = _data()
    with pytest.raises(ValueError, match=r"output=0"):
        alearn.wrap_nnx(WithAux(nnx.Rngs(0)), DFA, x, KEY)
    alearn.wrap_nnx(WithAux(nnx.Rngs(0)), alearn.rules.create("fa"), x, KEY)  # FA: no need
    model = alearn.wrap_nnx(WithAux(nnx.Rngs(0)), DFA, x, KEY, output=0)
    twin = alearn.wrap_nnx(WithAux(nnx.Rngs(0), aux=False), DFA, x, KEY)
    (loss, out), g = alearn.nnx_value_and_updates(lambda o, t: _ce(o[0], t), model, x, y)
    (loss2, _), g2 = alearn.nnx_value_and_updates(_ce, twin, x, y)
    assert set(out[1]) == {"h"} and jnp.allclose(loss, loss2)
    assert _rel(g["model"], g2["model"]) <= 1e-6
    assert float(jnp.abs(g["model"]["l1"]["kernel"][...]).sum()) > 0
