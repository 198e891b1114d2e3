"""Oracles for the AL defaults taken from the authors' code (issue 17).

Associated-loss reduction (hand computation), L2 scope (hand gradient of λ/2‖W‖²), the
ResNet block's activation option, the lr schedule and the BP weight-decay mask. Widths and
parameter counts are in tests/test_al_counts.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alearn.al as al
from alearn.al.stack import Stack
from alearn.train.optim import create_optimizer, create_schedule, decay_mask
from experiments.configs import al as al_cfg

IN_SHAPE = (4, 4, 1)


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _dense_block(**kw):
    sp = al.ALSpec(f_layers=((("dense", 5),),), bridges=((("dense", 6), ("dense", 3)),),
                   y_width=3)
    return al.network(sp, 4, (2,), **kw)


def _inputs(seed=0, n=8, shape=(2,), classes=4):
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, *shape))
    return x, jax.nn.one_hot(jax.random.randint(ky, (n,), 0, classes), classes)


def test_assoc_loss_default_is_the_code_mean_and_sum_is_eq_2_7_by_hand():
    x, y0 = _inputs()
    losses = {}
    for red in (None, "sum"):
        net = _dense_block(**({"assoc_reduction": red} if red else {}))
        st = net.init(jax.random.key(1))[0]
        losses[red or "default"] = float(al.associated_loss(
            net.blocks[0], st.params, st.model_state, x, y0)[0])
    assert net.blocks[0].assoc_reduction == "sum"
    assert _dense_block().blocks[0].assoc_reduction == "mean"
    p = {k: jax.tree.map(np.asarray, v) for k, v in st.params.items()}  # same init key
    lay = lambda tree, i: tree[sorted(tree)[i]]  # noqa: E731 - Dense_0, Dense_1 in order
    f = _elu(np.asarray(x) @ lay(p["f"], 0)["kernel"] + lay(p["f"], 0)["bias"])
    hid = _sig(f @ lay(p["b"], 0)["kernel"] + lay(p["b"], 0)["bias"])
    z = _sig(hid @ lay(p["b"], 1)["kernel"] + lay(p["b"], 1)["bias"])
    y1 = _sig(np.asarray(y0) @ lay(p["g"], 0)["kernel"] + lay(p["g"], 0)["bias"])
    sq = (z - y1) ** 2  # (8, 3)
    np.testing.assert_allclose(losses["default"], sq.mean(), rtol=1e-5)
    np.testing.assert_allclose(losses["sum"], sq.sum(axis=1).mean(), rtol=1e-5)
    np.testing.assert_allclose(losses["sum"] / losses["default"], 3.0, rtol=1e-5)  # y width


def _conv_bn_block(scope, lam):
    sp = al.ALSpec(f_layers=((("conv", 2, 1, True), ("dense", 3)),),
                   bridges=((("dense", 4), ("dense", 3)),), y_width=3)
    return al.network(sp, 4, IN_SHAPE, weight_decay=lam, l2_scope=scope)


@pytest.mark.parametrize("scope", ["f", "f_conv", "f_and_b"])
def test_l2_scope_gradient_is_lambda_w_on_the_named_kernels_only(scope):
    lam = 0.3
    x, y0 = _inputs(2, 6, IN_SHAPE)
    plain, reg = _conv_bn_block(scope, 0.0), _conv_bn_block(scope, lam)
    st = plain.init(jax.random.key(3))[0]

    def grads(net):
        fn = lambda p: al.associated_loss(net.blocks[0], p, st.model_state, x, y0)[0]  # noqa
        return fn(st.params), jax.grad(fn)(st.params)

    (l0, g0), (l1, g1) = grads(plain), grads(reg)
    diff = jax.tree.map(lambda a, b: np.asarray(b) - np.asarray(a), g0, g1)
    expected_sq = 0.0
    for side in ("f", "b", "g", "h"):
        for path, d in jax.tree_util.tree_leaves_with_path(diff[side]):
            name = jax.tree_util.keystr(path)
            w = np.asarray(_get(st.params[side], path))
            on = name.endswith("['kernel']") and (
                (side == "f" and (scope != "f_conv" or w.ndim == 4))
                or (side == "b" and scope == "f_and_b"))
            if on:  # d/dW of λ/2‖W‖² = λW
                np.testing.assert_allclose(d, lam * w, rtol=1e-4, atol=1e-6, err_msg=name)
                expected_sq += float(np.sum(w * w))
            else:  # bridges (unless f_and_b), biases, BatchNorm scale/bias: no L2 gradient
                np.testing.assert_array_equal(d, np.zeros_like(d), err_msg=f"{side}{name}")
    np.testing.assert_allclose(float(l1) - float(l0), lam / 2 * expected_sq, rtol=1e-4)
    assert expected_sq > 0


def _get(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


def test_bad_l2_scope_names_the_choices():
    with pytest.raises(ValueError, match="unknown l2_scope 'b'; choose one of: f, f_conv, f_and_b"):
        _conv_bn_block("b", 0.1)


def _elu_inv(v):
    return np.where(v > 0, v, np.log1p(np.maximum(v, -1 + 1e-7)))


def test_resnet_block_activation_before_and_after_the_add_is_the_code():
    x = jax.random.normal(jax.random.key(4), (3, 5, 5, 4))
    after = Stack((("res", 4, 1, False),), "elu")
    both = Stack((("res", 4, 1, True),), "elu")
    v = after.init(jax.random.key(5), x)
    out_after = np.asarray(after.apply(v, x), np.float64)
    out_both = np.asarray(both.apply(v, x), np.float64)  # same parameters
    branch = _elu_inv(out_after) - np.asarray(x)  # BN(conv2(...)) from elu(branch + x)
    np.testing.assert_allclose(out_both, _elu(_elu(branch) + np.asarray(x)), atol=2e-5)
    assert np.abs(out_both - out_after).max() > 1e-2


def test_resnet_spec_defaults_are_the_code_and_options_exist():
    sp = al.spec("al_resnet20")
    assert sp.y_width == 300 and sp.bridges[0][0] == ("flatten",)
    assert all(layer[3] is True for layer in sp.f_layers[1])
    alt = al.spec("al_resnet20", bridge="avgpool", res_act="after")
    assert alt.bridges[0][0] == ("avgpool",) and all(not l[3] for l in alt.f_layers[1])
    with pytest.raises(ValueError, match="unknown bridge 'pool'; choose one of: flatten, avgpool"):
        al.spec("al_resnet20", bridge="pool")


def test_lr_schedule_is_x0_1_at_40_60_80_percent_and_x0_5_at_90_percent():
    c = al_cfg.get_config("resnet20,cifar10")
    sched = create_schedule(c.schedule, 1e-4, steps_per_epoch=10, epochs=20,
                            decay_epochs=c.decay_epochs, decay_factor=c.decay_factors,
                            decay_fractions=c.decay_fractions)  # 200 steps
    want = {0: 1e-4, 79: 1e-4, 80: 1e-5, 119: 1e-5, 120: 1e-6, 159: 1e-6, 160: 1e-7,
            179: 1e-7, 180: 5e-8, 199: 5e-8}
    for step, lr in want.items():
        np.testing.assert_allclose(float(sched(step)), lr, rtol=1e-6, err_msg=str(step))


@pytest.mark.parametrize("model,dataset,al_lr,al_l2,bp_lr,bp_l2", [
    ("mlp", "mnist", 1e-4, (0.0, "f"), 1e-4, (0.0, "kernels")),
    ("cnn", "cifar100", 1e-4, (0.0, "f"), 1e-4, (0.0, "kernels")),
    ("vgg", "cifar10", 1e-4, (1e-5, "f_conv"), 1e-4, (5e-4, "conv_kernels")),
    ("resnet20", "cifar10", 1e-4, (1e-4, "f"), 1e-3, (1e-4, "kernels")),
    ("resnet32", "cifar100", 1e-4, (1e-4, "f"), 1e-3, (5e-4, "kernels")),
])
def test_config_lr_and_l2_are_the_code(model, dataset, al_lr, al_l2, bp_lr, bp_l2):
    c = al_cfg.get_config(f"{model},{dataset}")
    assert (c.rule, c.learning_rate) == ("al", al_lr)
    assert (c.weight_decay, c.al_hparams.l2_scope) == al_l2
    assert c.al_hparams.assoc_reduction == "mean"
    b = al_cfg.get_config(f"{model},{dataset},bp")
    assert (b.rule, b.learning_rate) == ("bp", bp_lr)
    assert (b.weight_decay, b.weight_decay_mask) == bp_l2
    assert al_cfg.as_bp(c).to_dict() == b.to_dict()


def test_bp_weight_decay_mask_touches_kernels_only():
    params = {"params": {"conv": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)},
                         "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
                         "dense": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones(2)}},
              "feedback": {"dense": {"kernel": jnp.ones((2, 2))}}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for on, decayed in (("kernels", {"conv", "dense"}), ("conv_kernels", {"conv"}),
                        ("params", {"conv", "bn", "dense"})):
        tx = create_optimizer("sgd", 1.0, weight_decay=0.1, weight_decay_mask=on)
        upd, _ = tx.update(zeros, tx.init(params), params)  # sgd: -lr (g + λ w)
        for path, u in jax.tree_util.tree_leaves_with_path(upd):
            keys = [k.key for k in path]
            w = np.asarray(_get(params, path))
            hit = keys[0] == "params" and keys[1] in decayed and (
                on == "params" or keys[2] == "kernel")
            np.testing.assert_allclose(np.asarray(u), -0.1 * w if hit else 0 * w,
                                       err_msg=f"{on} {keys}")
    with pytest.raises(ValueError, match="unknown weight_decay_mask 'bias'; choose one of"):
        decay_mask("bias")
    assert isinstance(tx, optax.GradientTransformation)


def test_mnist_configs_default_to_full_mnist_and_cpu_to_mnist5k():
    assert al_cfg.get_config("mlp").dataset == "mnist"
    assert al_cfg.get_config("cnn").dataset == "mnist"
    c = al_cfg.get_config("mlp,cpu")
    assert (c.dataset, c.epochs, c.model_kwargs.width_multiplier) == ("mnist5k", 20, 0.25)
    assert c.dataset_options.to_dict() == {"augment": "none", "normalize": "pixel_mean"}
    t = al_cfg.get_config("vgg,cifar10,jitter2")
    assert t.dataset_options.augment == "jitter2" and t.preprocessing == "cifar_jitter2"
    assert al_cfg.get_config("vgg,cifar10").dataset_options.to_dict() == {
        "augment": "crop_flip_contrast", "normalize": "pixel_mean_per_image",
        "crop_padding": 4}
    with pytest.raises(ValueError, match="unknown dataset or flag 'gpu'"):
        al_cfg.get_config("mlp,gpu")
