"""Rules on kernels of any rank, read as the 2-D maps they are (``LinearOp.kernel_in_axes``).

Oracles are independent of the ops' transposes: plain ``jax.grad`` of ``lax.dot_general`` /
``jnp.einsum``, a straight-through FA layer (value ``f(x, W)``, input cotangent through B),
and the weight mirror ``ΔB = η mean_i[(W ξ_i) ξ_iᵀ] − λ_B B`` (ALGORITHMS.md, eq. 2.6) in
NumPy on the kernel reshaped to (fan_in, fan_out).
"""

import math

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest
from jax import lax

from alearn._layers import ConvOp, DenseOp, Tape, apply_rule, rule_linear
from alearn.rules import _feedback_init, create
from alearn.rules.wm import mirror_step
from alearn.wrappers.ops import ConvGeneralOp, DotGeneralOp, EinsumOp

sg = jax.lax.stop_gradient
B, T, D, H, HD, V = 2, 3, 8, 2, 4, 5
NO = ((), ())


def _dot(x, w, xc, wc):
    return lax.dot_general(x, w, ((xc, wc), NO))


# name -> (op, forward f(x, w) written independently of the op, true fan_in)
def _layers():
    dg = DotGeneralOp(in_shape=(B, T, D), kernel_shape=(D, H, HD),
                      dimension_numbers=(((2,), (0,)), NO))
    out = DotGeneralOp(in_shape=(B, T, H, HD), kernel_shape=(H, HD, D),
                       dimension_numbers=(((2, 3), (0, 1)), NO))
    att = DotGeneralOp(in_shape=(B, T, D), kernel_shape=(V, D),
                       dimension_numbers=(((2,), (1,)), NO))
    es = EinsumOp(in_shape=(B, T, D), kernel_shape=(H, D, HD), equation="btd,hdk->bthk")
    return {
        "dense_general": (dg, lambda x, w: _dot(x, w, (2,), (0,)), D),
        "out_projection": (out, lambda x, w: _dot(x, w, (2, 3), (0, 1)), H * HD),
        "attend": (att, lambda x, w: _dot(x, w, (2,), (1,)), D),
        "einsum": (es, lambda x, w: jnp.einsum("btd,hdk->bthk", x, w), D),
    }


def _data(op, seed=0):
    kx, kw, kb, kt = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(kx, op.in_shape)
    w = jax.random.normal(kw, op.kernel_shape)
    b = jax.random.normal(kb, op.kernel_shape)
    target = jax.random.normal(kt, op.out_shape)
    return x, w, b, target


def _rule_grads(rule, op, x, w, feedback, target):
    def loss(x, w, fb):
        y, _ = rule_linear(rule, op, x, w, fb, None, None)
        return jnp.sum(jnp.tanh(y) * target)
    return jax.grad(loss, argnums=(0, 1, 2))(x, w, feedback)


def _fa_reference(f, x, w, b, target):
    """Straight-through FA: value f(x, W); ∂/∂W at x; the input cotangent through B."""
    def loss(x, w):
        y = f(sg(x), w) + f(x, sg(b)) - sg(f(x, b))
        return jnp.sum(jnp.tanh(y) * target)
    return jax.grad(loss, argnums=(0, 1))(x, w)


def test_op_metadata_reads_kernels_as_maps():
    ls = _layers()
    assert [ls[n][0].kernel_layout for n in ls] == ["ioo", "iio", "oi", "oio"]
    assert [ls[n][0].fans[0] for n in ls] == [D, H * HD, D, D]
    assert [ls[n][0].in_feature_ndim for n in ls] == [1, 2, 1, 1]
    conv = ConvOp(in_shape=(1, 6, 6, 3), kernel_shape=(3, 3, 3, 4))
    oihw = ConvGeneralOp(in_shape=(1, 3, 6, 6), kernel_shape=(4, 3, 3, 3), window_strides=(1, 1),
                         padding="SAME")
    assert conv.kernel_in_axes == (0, 1, 2) and conv.kernel_window_axes == (0, 1)
    assert conv.fans == (27, 36)
    assert (oihw.kernel_layout, oihw.kernel_window_axes, oihw.fans) == ("oiii", (2, 3), (27, 36))
    per_head = EinsumOp(in_shape=(B, T, H, D), kernel_shape=(H, D, HD), equation="bthd,hdk->bthk")
    assert (per_head.kernel_layout, per_head.fans, per_head.in_feature_ndim) == ("bio", (D, HD), 1)
    assert DenseOp(in_shape=(B, D), kernel_shape=(D, V)).kernel_layout == "io"


@pytest.mark.parametrize("name", ["dense_general", "out_projection", "attend", "einsum"])
@pytest.mark.parametrize("rule", ["fa", "kp"])
def test_fa_and_kp_with_b_equal_w_are_backprop(name, rule):
    op, f, _ = _layers()[name]
    x, w, _, target = _data(op)
    dx, dw, dfb = _rule_grads(create(rule), op, x, w, {"B": w}, target)
    want_x, want_w = jax.grad(lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * target), (0, 1))(x, w)
    np.testing.assert_allclose(dx, want_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, want_w, rtol=1e-5, atol=1e-6)
    if rule == "kp":  # B receives exactly W's update
        np.testing.assert_allclose(dfb["B"], want_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["dense_general", "out_projection", "attend", "einsum"])
def test_fa_with_random_b_matches_straight_through(name):
    op, f, _ = _layers()[name]
    x, w, b, target = _data(op, 1)
    dx, dw, _ = _rule_grads(create("fa"), op, x, w, {"B": b}, target)
    want_x, want_w = _fa_reference(f, x, w, b, target)
    np.testing.assert_allclose(dx, want_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, want_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["dense_general", "out_projection", "attend", "einsum"])
def test_sign_symmetry_is_fa_with_sign_w_at_the_true_fan_in(name):
    op, f, fan_in = _layers()[name]
    x, w, _, target = _data(op, 2)
    dx, dw, _ = _rule_grads(create("sign"), op, x, w, {}, target)
    s = np.sign(np.asarray(w)) * math.sqrt(2.0 / fan_in)
    want_x, want_w = _fa_reference(f, x, w, jnp.asarray(s, jnp.float32), target)
    np.testing.assert_allclose(dx, want_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, want_w, rtol=1e-5, atol=1e-6)


def test_feedback_draws_follow_the_true_fans():
    key = jax.random.key(7)
    d, vocab = 64, 512
    attend = DotGeneralOp(in_shape=(4, d), kernel_shape=(vocab, d),
                          dimension_numbers=(((1,), (1,)), NO))
    for init, var in (("he_normal", 2.0 / d), ("glorot_uniform", 2.0 / (d + vocab)),
                      ("normal_fan_in", 1.0 / d)):
        b = np.asarray(_feedback_init.draw_like(key, attend, init, 1.0))
        assert b.shape == (vocab, d)
        assert abs(b.std() / math.sqrt(var) - 1.0) < 0.03, init
    # a DenseGeneral / out-projection kernel gets exactly the equivalent Dense draw
    fa = create("fa")
    for op, flat in ((_layers()["dense_general"][0], (D, H * HD)),
                     (_layers()["out_projection"][0], (H * HD, D))):
        got = fa.init_feedback("B", key, op, 3)
        want = fa.init_feedback("B", key, DenseOp(in_shape=(B, flat[0]), kernel_shape=flat), 3)
        np.testing.assert_array_equal(np.asarray(got).reshape(flat), np.asarray(want))
    # dense and conv draws are unchanged (the default axes)
    conv = ConvGeneralOp(in_shape=(1, 6, 6, 3), kernel_shape=(3, 3, 3, 4), window_strides=(1, 1),
                         padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    for op in (conv, ConvOp(in_shape=(1, 6, 6, 3), kernel_shape=(3, 3, 3, 4)),
               DenseOp(in_shape=(2, D), kernel_shape=(D, V))):
        want = _feedback_init.draw(key, op.kernel_shape, "he_normal", 1.0)
        np.testing.assert_array_equal(fa.init_feedback("B", key, op, 3), want)


def _mirror_numpy(w2, b2, keys, rule, noise_shape):
    """``rule.mirror_steps`` updates of B (fan_in, fan_out) for kernel matrix w2, eq. 2.6."""
    w2, b2 = np.asarray(w2, np.float64), np.asarray(b2, np.float64)
    for k in keys:
        xi = rule.noise_std * np.asarray(jax.random.normal(k, noise_shape), np.float64)
        xi = xi.reshape(-1, rule.mirror_batch, w2.shape[-2])
        y = xi @ w2  # W ξ for every sample
        est = (np.swapaxes(xi, -1, -2) @ y / rule.mirror_batch).reshape(b2.shape)
        b2 = b2 + rule.mirror_lr * est - rule.mirror_decay * b2
    return b2


def _keys(key, i, rule):
    return [jax.random.fold_in(jax.random.fold_in(key, i), t) for t in range(rule.mirror_steps)]


def test_wm_mirror_of_any_rank_kernels_is_the_2d_mirror():
    rule = create("wm", mirror_steps=3, mirror_batch=16, mirror_decay=0.05)
    ks = jax.random.split(jax.random.key(3), 8)
    w3, b3 = jax.random.normal(ks[0], (D, H, HD)), jax.random.normal(ks[1], (D, H, HD))
    wa, ba = jax.random.normal(ks[2], (V, D)), jax.random.normal(ks[3], (V, D))
    ws, bs = jax.random.normal(ks[4], (3, H, HD, D)), jax.random.normal(ks[5], (3, H, HD, D))
    mark = jnp.zeros((1,))
    params = {"a_dg": {"kernel": w3}, "b_att": {"embedding": wa}, "c_scan": {"kernel": ws}}
    fb = {"a_dg": {"B": b3, "layout_ioo": mark}, "b_att": {"B": ba, "layout_oi": mark},
          "c_scan": {"B": bs, "layout_iio": jnp.zeros((3, 1))}}
    key = jax.random.key(11)
    mirror = jax.jit(lambda p, f, k: mirror_step(rule, p, f, k))
    got = mirror(params, fb, key)
    n = rule.mirror_batch
    want_dg = _mirror_numpy(w3.reshape(D, -1), b3.reshape(D, -1), _keys(key, 0, rule), rule, (n, D))
    np.testing.assert_allclose(got["a_dg"]["B"].reshape(D, -1), want_dg, rtol=1e-4, atol=1e-5)
    flat = mirror({"a_dg": {"kernel": w3.reshape(D, -1)}}, {"a_dg": {"B": b3.reshape(D, -1)}}, key)
    np.testing.assert_allclose(flat["a_dg"]["B"], got["a_dg"]["B"].reshape(D, -1), rtol=1e-6,
                               atol=1e-6)  # the 2-D mirror of the reshaped kernel
    want_att = _mirror_numpy(wa.T, ba.T, _keys(key, 1, rule), rule, (n, D))
    np.testing.assert_allclose(got["b_att"]["B"], want_att.T, rtol=1e-4, atol=1e-5)
    want_scan = _mirror_numpy(ws.reshape(3, H * HD, D), bs.reshape(3, H * HD, D),
                              _keys(key, 2, rule), rule, (3, n, H * HD))
    np.testing.assert_allclose(got["c_scan"]["B"].reshape(3, H * HD, D), want_scan, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(got["a_dg"]["layout_ioo"], mark)


def test_wm_owns_a_layout_marker_only_for_non_plain_kernels():
    wm = create("wm")
    ls = _layers()
    assert wm.layer_feedback_names(None, ls["attend"][0]) == ("B", "layout_oi")
    assert wm.layer_feedback_names(None, ls["einsum"][0]) == ("B", "layout_oio")
    assert wm.layer_feedback_names(None, DenseOp(in_shape=(B, D), kernel_shape=(D, V))) == ("B",)
    marker = wm.init_feedback("layout_oi", jax.random.key(0), ls["attend"][0], 3)
    assert marker.shape == (1,)
    rule = create("wm", mirror_batch=4)
    bad = {"m": {"kernel": jnp.ones((2, 2, 2, 2, 2, 2))}}
    with pytest.raises(ValueError, match="m/B.*no layout marker"):
        mirror_step(rule, bad, {"m": {"B": jnp.ones((2,) * 6)}}, jax.random.key(0))
    with pytest.raises(ValueError, match="m/B.*layout marker"):
        mirror_step(rule, {"m": {"kernel": jnp.ones((2, 3))}},
                    {"m": {"B": jnp.ones((2, 3)), "layout_ioo": jnp.zeros((1,))}},
                    jax.random.key(0))


class _Proj(nn.Module):
    """A DenseGeneral-like layer (F -> (2, F / 2)) through the tape's rule; scan body."""

    tape: object = None

    @nn.compact
    def __call__(self, x, _):
        k = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], 2, x.shape[-1] // 2))
        op = DotGeneralOp(in_shape=tuple(x.shape), kernel_shape=tuple(k.shape), dtype=k.dtype,
                          dimension_numbers=(((x.ndim - 1,), (0,)), NO))
        return jnp.tanh(apply_rule(self, op, x, k, self.tape).reshape(x.shape)), None


class _Scanned(nn.Module):
    @nn.compact
    def __call__(self, x, *, rule):
        tape = Tape(rule, x.shape[0], 3)
        stack = nn.scan(_Proj, variable_axes={"params": 0, "feedback": 0},
                        split_rngs={"params": True}, length=3)
        h, _ = stack(tape=tape)(x, None)
        return tape.finish(h.sum(-1))


def test_wm_mirrors_layers_stacked_by_nn_scan_slice_by_slice():
    rule = create("wm", mirror_steps=2, mirror_batch=8)
    x = jnp.ones((2, 3, D))
    v = _Scanned().init(jax.random.key(0), x, rule=rule)
    (name,) = v["params"]
    fb, w = v["feedback"][name], v["params"][name]["kernel"]
    assert fb["B"].shape == w.shape == (3, D, 2, D // 2) and fb["layout_ioo"].shape == (3, 1)
    key = jax.random.key(5)
    got = jax.jit(rule.mirror)(v["params"], v["feedback"], key)[name]["B"]
    want = _mirror_numpy(w.reshape(3, D, D), fb["B"].reshape(3, D, D), _keys(key, 0, rule), rule,
                         (3, rule.mirror_batch, D))
    np.testing.assert_allclose(got.reshape(3, D, D), want, rtol=1e-4, atol=1e-5)
