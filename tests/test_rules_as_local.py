"""Oracles for the local-learning baselines (Table 5.3): local_fixed (Mostafa), predsim."""

import jax
import jax.numpy as jnp
import pytest
from _as_models import TinyResNet

import alearn
from alearn import rules
from alearn.local import _local_loss, predsim
from alearn.models import MLP

from _local_fixtures import KEY, X, Y
from _local_fixtures import close as _close
from _local_fixtures import jit_init as _init
from _local_fixtures import jit_updates as _updates


def _hidden(v, x, upto):
    h = x
    for i in range(upto):
        p = v["params"][f"Dense_{i}"]
        h = jax.nn.relu(h @ p["kernel"] + p["bias"])
    return h


def test_local_fixed_layer_learns_only_from_its_own_fixed_classifier():
    model, rule = MLP(num_classes=3, widths=(8, 8)), rules.create("local_fixed")
    v = _init(model, rule, KEY, X)
    u = _updates(model, rule, v, X, Y)["params"]
    onehot = jax.nn.one_hot(Y, 3)
    for layer in (0, 1):  # layer l is trained by the head at layer l+1's input
        m = v["feedback"][f"Dense_{layer + 1}"]["LC"]

        def local(p, layer=layer, m=m):
            params = {**v["params"], f"Dense_{layer}": p}
            h = _hidden({"params": params}, X, layer + 1)
            return _local_loss.cross_entropy(h @ m, onehot)

        want = jax.grad(local)(v["params"][f"Dense_{layer}"])
        _close(u[f"Dense_{layer}"]["kernel"], want["kernel"])
        _close(u[f"Dense_{layer}"]["bias"], want["bias"])
    bp = _updates(model, rules.BP(), v, X, Y)["params"]
    jax.tree.map(_close, u["Dense_2"], bp["Dense_2"])  # output layer: global error


def test_predsim_heads_and_layers_follow_the_local_loss():
    model, rule = MLP(num_classes=3, widths=(8, 8)), rules.create("predsim", sim_features=4)
    v = _init(model, rule, KEY, X)
    u = _updates(model, rule, v, X, Y)
    onehot = jax.nn.one_hot(Y, 3)
    fb = v["feedback"]["Dense_2"]
    h = _hidden(v, X, 2)
    loss = lambda h, w: predsim._loss(h, w, onehot, 2048, 0.99)  # noqa: E731
    g_lc, g_sim = jax.grad(loss, argnums=1)(h, (fb["LC"], fb["SIM"]))
    _close(u["feedback"]["Dense_2"]["LC"], g_lc, 1e-4)
    _close(u["feedback"]["Dense_2"]["SIM"], g_sim, 1e-4)

    def local(p):
        params = {**v["params"], "Dense_1": p}
        return loss(_hidden({"params": params}, X, 2), (fb["LC"], fb["SIM"]))

    _close(u["params"]["Dense_1"]["kernel"], jax.grad(local)(v["params"]["Dense_1"])["kernel"],
           1e-4)


@pytest.mark.parametrize("name", ["predsim"])
def test_local_rules_run_on_a_residual_net(name):
    model, rule = TinyResNet(widths=(4, 8), strides=(1, 2)), rules.create(name)
    x = jax.random.normal(KEY, (4, 8, 8, 3))
    v = _init(model, rule, KEY, x)
    u = _updates(model, rule, v, x, Y[:4])
    assert jax.tree.structure(u) == jax.tree.structure(alearn.trainable(rule, v))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(u))
    assert float(jnp.abs(u["params"]["Conv_0"]["kernel"]).max()) > 0
