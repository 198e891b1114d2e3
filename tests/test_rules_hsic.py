"""Oracles for the HSIC-bottleneck local rule (Pogodin & Latham 2020), Table 5.3."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _as_models import TinyResNet

import alearn
from alearn import rules
from alearn.local import hsic
from _paper_models import MLP

import _local_reference as ref
from _local_fixtures import KEY, X, Y
from _local_fixtures import close as _close
from _local_fixtures import jit_init as _init
from _local_fixtures import jit_updates as _updates


def _hsic_by_hand(a, b, sigma, gamma, y):
    """Independent loss: explicit loops for the Gaussian kernel, centred kernels' sum."""
    def gauss(v):
        m, d = v.shape
        return jnp.stack([jnp.stack([jnp.exp(-jnp.sum((v[i] - v[j]) ** 2) / (2 * sigma**2 * d))
                                     for j in range(m)]) for i in range(m)])

    def h(ka, kb):
        m = ka.shape[0]
        c = lambda k: k - k.mean(0) - k.mean(1)[:, None] + k.mean()  # noqa: E731  H K H
        return jnp.sum(c(ka) * c(kb)) / (m - 1) ** 2

    kz = gauss(b)
    return h(gauss(a), kz) - gamma * h(y @ y.T, kz)


def test_hsic_estimator_matches_a_hand_computed_value():
    ka = jnp.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    kb = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # H K_A H by hand: column/row means of K_A are (0.5, 0.5, 1/3), grand mean 4/9.
    # (H K_A H)_{ij} = K_ij − r_i − r_j + 4/9; with K_B's the same way, the sum of the
    # products is 14/9 (diagonal 72/81, off-diagonal 2 · 27/81); / (m − 1)² = 4 → 7/18.
    _close(hsic.hsic(ka, kb), 7.0 / 18.0, 1e-6)
    a = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    k = hsic.gaussian_kernel(a, 1.0)  # d = 2: exp(−‖·‖² / 4)
    _close(k[0, 1], np.exp(-0.25), 1e-6)
    _close(k[1, 2], np.exp(-5.0 / 4), 1e-6)
    _close(k[0, 0], 1.0, 1e-6)


def test_hyperparameters_are_validated():
    for bad in ({"gamma": 0.0}, {"sigma": -1.0}, {"gamma": float("nan")}):
        with pytest.raises(ValueError):
            rules.create("hsic", **bad)


@pytest.mark.parametrize("gamma,sigma", [(2.0, 1.0), (100.0, 0.5)])
def test_layers_follow_grad_of_their_local_hsic_loss(gamma, sigma):
    model, rule = MLP(num_classes=3, widths=(8, 8)), rules.create("hsic", gamma=gamma, sigma=sigma)
    v = _init(model, rule, KEY, X)
    u = _updates(model, rule, v, X, Y)
    assert set(u) == {"params"}
    onehot = jax.nn.one_hot(Y, 3)
    for layer in (0, 1):  # layer l is trained by the loss on the input of layer l+1

        def local(p, layer=layer):
            params = {**v["params"], f"Dense_{layer}": p}
            h = X
            for i in range(layer + 1):
                q = params[f"Dense_{i}"]
                h = jax.nn.relu(h @ q["kernel"] + q["bias"])
            return _hsic_by_hand(X, h, sigma, gamma, onehot)

        want = jax.grad(local)(v["params"][f"Dense_{layer}"])
        assert float(jnp.abs(want["kernel"]).max()) > 1e-6
        _close(u["params"][f"Dense_{layer}"]["kernel"], want["kernel"], 1e-4)
        _close(u["params"][f"Dense_{layer}"]["bias"], want["bias"], 1e-4)
    bp = _updates(model, rules.BP(), v, X, Y)["params"]
    jax.tree.map(_close, u["params"]["Dense_2"], bp["Dense_2"])  # output layer: global error


def test_no_error_crosses_a_layer():
    model, rule = MLP(num_classes=3, widths=(8, 8)), rules.create("hsic")
    v = _init(model, rule, KEY, X)
    loss = lambda x: alearn.cross_entropy(model.apply(v, x, rule=rule), Y)  # noqa: E731
    dx = jax.grad(loss)(X)
    assert np.array_equal(np.asarray(dx), np.zeros(X.shape))
    bp_loss = lambda x: alearn.cross_entropy(model.apply(v, x), Y)  # noqa: E731
    assert float(jnp.abs(jax.grad(bp_loss)(X)).max()) > 0  # the check can fail


def test_layers_of_a_residual_net_follow_grad_of_their_local_hsic_losses():
    """TinyResNet (stem, identity block, stride-2 projection block): every update equals
    ``jax.grad`` of global CE + Σ_l HSIC_l (by hand) with every layer input cut but the
    identity shortcuts not; one head per distinct layer input."""
    gamma, sigma = 2.0, 1.0
    model = TinyResNet(widths=(4, 8), strides=(1, 2))
    rule = rules.create("hsic", gamma=gamma, sigma=sigma)
    x = jax.random.normal(KEY, (4, 8, 8, 3))
    y = jax.nn.one_hot(Y[:4], 3)
    v = _init(model, rule, KEY, x)
    u = _updates(model, rule, v, x, Y[:4])
    assert set(u) == {"params"}

    def total(params):
        logits, heads = ref.tiny_resnet_local(params, x)
        flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731  (all below 2048 features)
        return ref.cross_entropy(logits, y) + sum(
            _hsic_by_hand(flat(x), flat(h), sigma, gamma, y) for h in heads.values())

    want = jax.jit(jax.grad(total))(v["params"])
    for layer, grads in want.items():
        assert float(jnp.abs(grads["kernel"]).max()) > 1e-6, layer
        jax.tree.map(lambda a, b: _close(a, b, 1e-4), u["params"][layer], grads)
