"""Activation sharing (AS, ASAP, ASFP) on token activations (batch, T, features).

Oracles: BP by ``jax.grad`` of the same model built from ``flax.linen.Dense``, and each
dimension-matching method written by hand in NumPy over the feature axis, position by
position (ALGORITHMS.md: tile + max-pool, tile + average-pool, fixed random projection).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import flax.linen as nn
from flax import traverse_util

from alearn._layers import Dense, Tape, apply_rule
from alearn.rules import create
from alearn.rules import dimension_matching as dm
from alearn.wrappers.ops import DotGeneralOp

N, T, C = 2, 4, 3
NO = ((), ())


class TokenMLP(nn.Module):
    """Dense(16) -> 2 residual blocks h + Dense(16)(relu(Dense(24)(h))) -> Dense(C) per token.

    ``rule=None`` builds the same parameter tree from ``flax.linen.Dense`` (the BP oracle).
    """

    @nn.compact
    def __call__(self, x, *, rule=None):
        tape = Tape(rule, x.shape[0], C) if rule is not None else None
        lin = (lambda f: lambda h: Dense(f)(h, tape)) if rule is not None else (
            lambda f: nn.Dense(f))
        h = lin(16)(x)
        for _ in range(2):
            z = nn.relu(lin(24)(h))
            h = h + lin(16)(z)
        out = lin(C)(h)
        return tape.finish(out) if tape is not None else out


class Chain(nn.Module):
    """Token layers with the given output widths (relu between); ``reshape`` at layer i
    regroups its input (B, T, F) into (B, T // 2, 2F) (other positions)."""

    widths: tuple = (64, 32, C)
    reshape_at: int = -1

    @nn.compact
    def __call__(self, x, *, rule):
        tape = Tape(rule, x.shape[0], C)
        for i, w in enumerate(self.widths):
            if i == self.reshape_at:
                x = x.reshape(x.shape[0], x.shape[1] // 2, -1)
            x = Dense(w)(x, tape)
            if i < len(self.widths) - 1:
                x = nn.relu(x)
        return tape.finish(x)


class OutProj(nn.Module):
    """(B, T, F) kernel (F, heads, hd), then the (heads, hd) -> F' out-projection."""

    shape: tuple
    dims: tuple

    @nn.compact
    def __call__(self, x, tape):
        k = self.param("kernel", nn.initializers.lecun_normal(), self.shape)
        op = DotGeneralOp(in_shape=tuple(x.shape), kernel_shape=self.shape,
                          dimension_numbers=self.dims)
        return apply_rule(self, op, x, k, tape)


class Heads(nn.Module):
    @nn.compact
    def __call__(self, x, *, rule):
        tape = Tape(rule, x.shape[0], C)
        h = nn.relu(Dense(16)(x, tape))  # layer 0 (frozen under ASAP)
        h = OutProj((16, 2, 4), (((2,), (0,)), NO))(h, tape)  # takes its input (B, T, 16)
        h = OutProj((2, 4, C), (((2, 3), (0, 1)), NO))(nn.relu(h), tape)  # shares (B, T, 16)
        return tape.finish(h)


def _loss(model, variables, x, y, rule):
    logits = model.apply(variables, x, rule=rule)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _data(d=8):
    kx, ky = jax.random.split(jax.random.key(0))
    return jax.random.normal(kx, (N, T, d)), jax.random.randint(ky, (N, T), 0, C)


def _grads(model, rule, x, y, b_is_w=False):
    v = model.init(jax.random.key(1), x, rule=rule)
    fb = dict(v.get("feedback", {}))
    if b_is_w:
        fb = {m: {k: (v["params"][m]["kernel"] if k == "B" else a) for k, a in f.items()}
              for m, f in fb.items()}
    g = jax.grad(lambda p, f: _loss(model, {"params": p, "feedback": f}, x, y, rule),
                 argnums=(0, 1))(v["params"], fb)
    return v, g


@pytest.mark.parametrize("name,hp", [("as", {"grouping": "block_input"}), ("asap", {}),
                                     ("asfp", {})])
def test_sharing_own_input_with_b_equal_w_is_backprop_on_a_token_mlp(name, hp):
    x, y = _data()
    rule = create(name, k=1, **hp) if name == "as" else create(name, k=1, decay=0.0)
    v, (gp, gf) = _grads(TokenMLP(), rule, x, y, b_is_w=True)
    tx = rule.transform()  # zeroes the frozen first layer (bias included)
    upd, _ = tx.update({"params": gp, "feedback": gf}, tx.init(None),
                       {"params": v["params"], "feedback": v.get("feedback", {})})
    gp, gf = upd["params"], upd["feedback"]
    want = jax.grad(lambda p: _loss(TokenMLP(), {"params": p}, x, y, None))(v["params"])
    frozen = {m for m, f in v.get("feedback", {}).items() if "frozen" in f}
    assert frozen == (set() if name == "as" else {"Dense_0"})
    for m in want:
        for k in want[m]:
            ref = np.zeros_like(want[m][k]) if m in frozen else want[m][k]
            np.testing.assert_allclose(gp[m][k], ref, rtol=2e-5, atol=1e-6, err_msg=f"{m}/{k}")
        if "B" in gf.get(m, {}):  # ASAP and ASFP: ΔB = δ h̃ᵀ with h̃ = own input
            np.testing.assert_allclose(gf[m]["B"], want[m]["kernel"], rtol=2e-5, atol=1e-6)


def _match_numpy(a, f_out, method, proj=None):
    """The three methods on the last axis of a (B, T, F) array, per position."""
    a = np.asarray(a, np.float64)
    f = a.shape[-1]
    if method == 3:
        return a @ np.asarray(proj, np.float64)
    if f < f_out:  # tile: concatenate copies, crop
        return np.concatenate([a] * -(-f_out // f), axis=-1)[..., :f_out]
    r = f // f_out  # f = r * f_out here: pool groups of r adjacent features
    grouped = a.reshape(*a.shape[:-1], f_out, r)
    return grouped.max(-1) if method == 1 else grouped.mean(-1)


@pytest.mark.parametrize("method", [1, 2, 3])
@pytest.mark.parametrize("f_in,f_out", [(64, 32), (32, 64), (24, 40)])
def test_token_matching_works_per_position_on_the_feature_axis(method, f_in, f_out):
    if f_in > f_out and f_in % f_out:
        pytest.skip("non-integer pooling ratios are covered by test_dimension_matching")
    a = jax.random.normal(jax.random.key(2), (N, T, f_in))
    proj = dm.projection(jax.random.key(3), a.shape, (N, T, f_out)) if method == 3 else None
    got = dm.match(a, (N, T, f_out), method, proj)
    np.testing.assert_allclose(got, _match_numpy(a, f_out, method, proj), rtol=1e-5, atol=1e-6)
    assert dm.matchable((N, T, f_in), (N, T, f_out))
    assert not dm.matchable((N, T, f_in), (N, T // 2, f_out))
    with pytest.raises(ValueError, match="same positions"):
        dm.match(a, (N, T // 2, f_out), method, proj)


@pytest.mark.parametrize("method", [1, 2, 3])
def test_asap_shares_a_wider_token_activation_through_each_method(method):
    x, y = _data(16)
    rule = create("asap", k=2, match=method)
    model = Chain()
    v, (gp, gf) = _grads(model, rule, x, y)
    logits = model.apply(v, x, rule=rule)
    delta = np.asarray(jax.grad(lambda z: optax.softmax_cross_entropy_with_integer_labels(
        z, y).mean())(logits))  # the error at the last layer's output
    p = jax.tree.map(np.asarray, v["params"])
    x1 = np.maximum(np.asarray(x) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    x2 = np.maximum(x1 @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], 0)
    assert x1.shape[-1] == 64 and x2.shape[-1] == 32  # layer 2 reads (B, T, 32), shares x1
    proj = None
    if method == 3:
        key = jax.random.fold_in(jax.random.key(rule.seed), 2)
        proj = dm.projection(key, x1.shape, x2.shape)
    shared = _match_numpy(x1, 32, method, proj)
    want = np.einsum("btf,btc->fc", shared, delta)
    np.testing.assert_allclose(gp["Dense_2"]["kernel"], want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gf["Dense_2"]["B"], want, rtol=1e-4, atol=1e-6)


def test_other_positions_start_a_new_group_with_the_own_input():
    x, y = _data(16)
    y = y[:, ::2]
    model = Chain(widths=(16, 16, C), reshape_at=2)  # layer 2 reads (B, T/2, 32)
    rule = create("asap", k=2)  # layer 1's group has room for layer 2: only positions cut it
    v, (gp, _) = _grads(model, rule, x, y)
    want = jax.grad(lambda p: _loss(model, {"params": p, "feedback": v["feedback"]}, x, y,
                                    create("bp")))(v["params"])
    np.testing.assert_allclose(gp["Dense_2"]["kernel"], want["Dense_2"]["kernel"], rtol=1e-5,
                               atol=1e-6)


def test_multi_axis_features_are_flattened_for_matching():
    x, y = _data()
    rule = create("asap", k=2, match=2)
    v, (gp, _) = _grads(Heads(), rule, x, y)
    flat = traverse_util.flatten_dict(v["params"])
    h = np.maximum(np.asarray(x) @ np.asarray(flat[("Dense_0", "kernel")])
                   + np.asarray(flat[("Dense_0", "bias")]), 0)  # (B, T, 16)
    logits = Heads().apply(v, x, rule=rule)
    delta = np.asarray(jax.grad(lambda z: optax.softmax_cross_entropy_with_integer_labels(
        z, y).mean())(logits))
    shared = _match_numpy(h, 8, 2).reshape(N, T, 2, 4)  # (B, T, 16) -> (B, T, heads, hd)
    want = np.einsum("bthk,btc->hkc", shared, delta)
    np.testing.assert_allclose(gp["OutProj_1"]["kernel"], want, rtol=1e-4, atol=1e-6)


def test_residual_token_net_with_block_marks_trains():
    class Marked(nn.Module):
        @nn.compact
        def __call__(self, x, *, rule):
            tape = Tape(rule, x.shape[0], C)
            h = Dense(16)(x, tape)
            for _ in range(2):
                tape.block(h)
                h = h + Dense(16)(nn.relu(Dense(24)(h, tape)), tape)
            return tape.finish(Dense(C)(h, tape))

    x, y = _data()
    _, (gp, gf) = _grads(Marked(), create("asap", k=2), x, y)
    leaves = jax.tree.leaves((gp, gf))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves)
    assert float(jnp.abs(gp["Dense_3"]["kernel"]).max()) > 0
