"""Oracles for Associated Learning (alearn.al): locality, step equivalence, eq. 2.8, counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alearn.al as al
import alearn.models
from alearn.al.stack import Stack
from alearn.models import num_params
from alearn.rules import BP

IN_SHAPE = (6, 6, 1)


def _net(depth=3, assoc_trains_g=False, **kw):
    sp = al.ALSpec(f_layers=((("dense", 12),), (("dense", 10),), (("dense", 9),))[:depth],
                   bridges=((("dense", 16), ("dense", 8)),) * depth, y_width=8)
    return al.network(sp, 5, IN_SHAPE, lr=1e-2, assoc_trains_g=assoc_trains_g, **kw)


@functools.lru_cache(maxsize=None)
def _states(depth=3):
    """Initial states of ``_net(depth)`` (any flags: same pytree), compiled once per depth."""
    return _net(depth=depth).init(jax.random.key(depth))


def _batch(n=16, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, *IN_SHAPE)), jax.random.randint(ky, (n,), 0, 5)


def _block_inputs(net, all_params, states, x, labels, i):
    """s_{i}, y_{i} computed from the raw inputs through blocks < i (no stop_gradient here)."""
    s, y = x, al.targets(net, labels)
    for j in range(i):
        bd = net.blocks[j]
        s, _ = al.apply_fn(bd.f, all_params[j]["f"], states[j].model_state["f"], s, True)
        y = bd.g.apply({"params": all_params[j]["g"]}, y)
    return s, y


@pytest.mark.parametrize("assoc_trains_g", [False, True])
def test_gradients_never_cross_blocks(assoc_trains_g):
    net = _net(assoc_trains_g=assoc_trains_g)
    states = _states(3)
    x, labels = _batch()
    all_params = [st.params for st in states]

    def loss(ps, i, which):
        bd = net.blocks[i]
        s, y = _block_inputs(net, ps, states, x, labels, i)
        if which == "assoc":
            return al.associated_loss(bd, ps[i], states[i].model_state, s, y)[0]
        return al.autoencoder_loss(bd, ps[i], y)[0]

    cases = [(i, w) for i in range(len(net.blocks)) for w in ("assoc", "ae")]
    all_grads = jax.jit(lambda ps: [jax.grad(loss)(ps, i, w) for i, w in cases])(all_params)
    for (i, which), grads in zip(cases, all_grads):
        for j, gj in enumerate(grads):
            for part, tree in gj.items():
                norm = sum(float(jnp.abs(leaf).sum()) for leaf in jax.tree.leaves(tree))
                own = (which == "assoc" and part in ("f", "b")) or \
                      (which == "ae" and part in ("g", "h")) or \
                      (which == "assoc" and part == "g" and assoc_trains_g)
                if j == i and own:
                    assert norm > 0, (i, which, part)
                else:
                    assert norm == 0.0, (i, which, j, part, norm)


def test_per_block_jitted_steps_equal_whole_network_step():
    net = _net(depth=2)
    states0 = _states(2)
    whole = jax.jit(functools.partial(al.train_step, net))
    steps = [al.make_block_step(bd) for bd in net.blocks]
    a, b = states0, list(states0)
    for t in range(3):
        x, labels = _batch(seed=t)
        a, _ = whole(a, x, labels)
        s, y = x, al.targets(net, labels)
        for i, step in enumerate(steps):
            b[i], s, y, _ = step(b[i], s, y)
    for sa, sb in zip(a, b):
        for la, lb in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
            np.testing.assert_allclose(np.asarray(la), np.asarray(lb), rtol=1e-6, atol=1e-7)
    # and the parameters did move
    moved = jax.tree.leaves(jax.tree.map(lambda p, q: jnp.abs(p - q).max(),
                                         a[0].params, states0[0].params))
    assert max(float(m) for m in moved) > 1e-4


def test_block_step_is_the_adam_step_on_local_grads():
    """Forward side uses lr, autoencoder side 2x lr (seed code), from the local losses."""
    net = _net(depth=1)
    st = _states(1)[0]
    bd = net.blocks[0]
    x, labels = _batch()
    y0 = al.targets(net, labels)
    new, _, _, _ = al.make_block_step(bd)(st, x, y0)
    g = jax.jit(jax.grad(lambda p: al.block_losses(bd, p, st.model_state, x, y0)[0]))(st.params)
    for part, lr in (("f", 1e-2), ("b", 1e-2), ("g", 2e-2), ("h", 2e-2)):
        # first Adam step moves every coordinate with nonzero gradient by ~lr*sign(g)
        delta = jax.tree.map(lambda a, b_: a - b_, new.params[part], st.params[part])
        for d, gg in zip(jax.tree.leaves(delta), jax.tree.leaves(g[part])):
            d, gg = np.asarray(d), np.asarray(gg)
            big = np.abs(gg) > 1e-5
            np.testing.assert_allclose(d[big], -lr * np.sign(gg[big]), rtol=1e-2)


def test_inference_equals_explicit_composition():
    net = _net()
    states = _states(3)

    @jax.jit
    def perturb(sts):  # move the parameters off their initial values (biases start at 0)
        leaves, tdef = jax.tree.flatten([st.params for st in sts])
        keys = jax.random.split(jax.random.key(5), len(leaves))
        new = [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
        return tuple(st._replace(params=p) for st, p in zip(sts, tdef.unflatten(new)))

    states = perturb(states)
    x, _ = _batch(seed=9)
    names = []

    @jax.jit
    def run(sts, x):
        p = [st.params for st in sts]
        f = [lambda v, i=i: net.blocks[i].f.apply({"params": p[i]["f"]}, v) for i in range(3)]
        h = [lambda v, i=i: net.blocks[i].h.apply({"params": p[i]["h"]}, v) for i in range(3)]
        b3 = lambda v: net.blocks[2].b.apply({"params": p[2]["b"]}, v)  # noqa: E731
        expected = h[0](h[1](h[2](b3(f[2](f[1](f[0](x)))))))
        scores, acts = al.prediction_path(net, sts, x)
        names[:] = [n for n, _ in acts]
        # by hand for the last layer: h_1 is sigmoid(z W + c)
        w = p[0]["h"]["Dense_0"]
        manual = jax.nn.sigmoid(acts[-2][1] @ w["kernel"] + w["bias"])
        return expected, scores, manual, acts[1][1], f[1](f[0](x))

    expected, scores, manual, act2, f2 = run(states, x)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(expected), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(manual), rtol=1e-6)
    assert names == ["f1/layer1", "f2/layer1", "f3/layer1", "b3/layer1", "b3/layer2",
                     "h3/layer1", "h2/layer1", "h1/layer1"]
    np.testing.assert_allclose(np.asarray(act2), np.asarray(f2), rtol=1e-6)


def test_thesis_mlp_counts_and_bp_twin_is_the_thesis_mlp():
    layers = [784, 1024, 1024, 5120, 1024, 1024, 10]
    thesis = sum(a * b + b for a, b in zip(layers[:-1], layers[1:]))
    net = al.create("al_mlp", 10, (28, 28, 1))
    states = jax.eval_shape(lambda: net.init(jax.random.key(0)))
    counts = al.param_counts(net, states)
    assert counts["effective"] == thesis
    # affiliated: g_1 (10->1024), g_2 (1024->1024), b_1 (1024->5120->1024)
    assert counts["affiliated"] == (10 * 1024 + 1024) + (1024 * 1024 + 1024) + (
        1024 * 5120 + 5120 + 5120 * 1024 + 1024)
    bp = alearn.models.create("al_mlp", 10)
    v = jax.eval_shape(lambda: bp.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), rule=BP()))
    assert num_params(v) == thesis


@pytest.mark.parametrize("name,shape,wm", [
    ("al_cnn", (28, 28, 1), 0.25), ("al_vgg", (32, 32, 3), 0.125),
    ("al_resnet20", (32, 32, 3), 0.25), ("al_resnet32", (32, 32, 3), 0.25),
    ("al_sigmoid_mlp", (28, 28, 1), 0.25)])
def test_al_and_bp_twin_have_equal_parameter_counts(name, shape, wm):
    net = al.create(name, 10, shape, width_multiplier=wm)
    counts = al.param_counts(net, jax.eval_shape(lambda: net.init(jax.random.key(0))))
    bp = alearn.models.create(name, 10, width_multiplier=wm)
    v = jax.eval_shape(lambda: bp.init(jax.random.key(0), jnp.zeros((1, *shape)), rule=BP()))
    assert counts["effective"] == num_params(v)
    assert counts["affiliated"] > 0


def test_bad_block_lists_fail_at_construction_naming_block_and_shapes():
    good = _net(depth=1).blocks[0]
    conv_f = al.BlockDef(f=Stack((("conv", 4, 1, False),)), g=good.g, h=Stack((("dense", 8),),
                         "sigmoid"), b=good.b, name="convblock")
    with pytest.raises(ValueError, match=r"AL block 2 \(convblock\).*\(2, 12\)"):
        al.ALNetwork((good, conv_f), IN_SHAPE, 5)
    bad_bridge = al.BlockDef(f=good.f, g=good.g, h=good.h, b=Stack((("dense", 7),)), name="b7")
    with pytest.raises(ValueError, match=r"AL block 1 \(b7\): bridge b output shape \(2, 7\) "
                                         r"does not match y_1 shape \(2, 8\)"):
        al.ALNetwork((bad_bridge,), IN_SHAPE, 5)
    bad_h = al.BlockDef(f=good.f, g=good.g, h=Stack((("dense", 4),)), b=good.b, name="h4")
    with pytest.raises(ValueError, match=r"decoder h output shape \(2, 4\).*y_0 shape \(2, 5\)"):
        al.ALNetwork((bad_h,), IN_SHAPE, 5)
    with pytest.raises(ValueError, match="unknown AL model 'al_mlpp'; choose one of: al_cnn"):
        al.create("al_mlpp", 10, IN_SHAPE)


def test_equal_shaped_blocks_vmap_over_stacked_states():
    net = al.create("al_sigmoid_mlp", 10, IN_SHAPE, width_multiplier=0.05,
                    spec_overrides={"depth": 3, "layers_per_block": 1})
    states = net.init(jax.random.key(5))
    s = jax.random.normal(jax.random.key(6), (8, 13))
    y = jax.nn.sigmoid(jax.random.normal(jax.random.key(7), (8, 13)))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), states[1], states[2])
    out = jax.jit(jax.vmap(functools.partial(al.block_step, net.blocks[1])))(
        stacked, jnp.stack([s, s]), jnp.stack([y, y]))
    for k, st in ((0, states[1]), (1, states[2])):
        ref = al.make_block_step(net.blocks[k + 1])(st, s, y)
        for la, lb in zip(jax.tree.leaves(ref), jax.tree.leaves(jax.tree.map(lambda a: a[k], out))):
            np.testing.assert_allclose(np.asarray(la), np.asarray(lb), rtol=1e-5, atol=1e-6)


def test_al_training_lowers_local_losses_and_fits_a_small_problem():
    net = _net(depth=2)
    states = _states(2)
    x, labels = _batch(n=64, seed=1)
    step = jax.jit(functools.partial(al.train_step, net))
    states, m0 = step(states, x, labels)
    for _ in range(150):
        states, m = step(states, x, labels)
    assert float(m["assoc_loss"]) < 0.5 * float(m0["assoc_loss"])
    assert float(m["ae_loss"]) < 0.5 * float(m0["ae_loss"])
    scores = jax.jit(functools.partial(al.predict, net))(states, x)
    acc = float(jnp.mean(jnp.argmax(scores, -1) == labels))
    assert acc > 0.9, acc
    assert isinstance(net.blocks[0].tx_forward, optax.GradientTransformation)


def test_batchnorm_blocks_per_block_steps_equal_whole_step_and_update_stats():
    sp = al.ALSpec(f_layers=((("conv", 4, 1, True),), (("res", 4, 2),)),
                   bridges=((("avgpool",), ("dense", 8)),) * 2, y_width=8)
    net = al.network(sp, 5, IN_SHAPE, lr=1e-2)
    states0 = net.init(jax.random.key(11))
    x, labels = _batch()
    a, _ = jax.jit(functools.partial(al.train_step, net))(states0, x, labels)
    b, s, y = [], x, al.targets(net, labels)
    for bd, st in zip(net.blocks, states0):
        st, s, y, _ = al.make_block_step(bd)(st, s, y)
        b.append(st)
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(la), np.asarray(lb), rtol=1e-5, atol=1e-6)
    stats0 = states0[0].model_state["f"]["batch_stats"]
    stats1 = a[0].model_state["f"]["batch_stats"]
    assert any(float(jnp.abs(p - q).max()) > 0 for p, q in
               zip(jax.tree.leaves(stats0), jax.tree.leaves(stats1)))
