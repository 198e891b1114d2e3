"""Oracles for the local-learning baselines (Table 5.3): local_fixed (Mostafa), predsim."""

import jax
import jax.numpy as jnp
import pytest
from _as_models import TinyResNet

from alearn import rules
from _paper_models import MLP

import _local_reference as ref
from _local_fixtures import KEY, X, Y
from _local_fixtures import close as _close
from _local_fixtures import jit_init as _init
from _local_fixtures import jit_updates as _updates

sg = jax.lax.stop_gradient


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
            return ref.cross_entropy(h @ m, onehot)

        want = jax.grad(local)(v["params"][f"Dense_{layer}"])
        _close(u[f"Dense_{layer}"]["kernel"], want["kernel"])
        _close(u[f"Dense_{layer}"]["bias"], want["bias"])
    bp = _updates(model, rules.BP(), v, X, Y)["params"]
    jax.tree.map(_close, u["Dense_2"], bp["Dense_2"])  # output layer: global error


def _mlp_local(params, x):
    """MLP(widths=(8, 8)) with every layer input cut: (logits, {host: head input})."""
    relu, p = jax.nn.relu, params
    h0 = relu(sg(x) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    h1 = relu(sg(h0) @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
    return sg(h1) @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"], {"Dense_1": h0, "Dense_2": h1}


def _local_objective(forward, head_loss):
    """Global CE at the output layer + every head's own loss, as a function of all weights."""
    def total(params, feedback, x, y):
        logits, heads = forward(params, x)
        return ref.cross_entropy(logits, y) + sum(
            head_loss(h, feedback[host], y) for host, h in heads.items())
    return total


def _predsim_head(beta):
    return lambda h, fb, y: ref.predsim_loss(h, fb["LC"], fb["SIM"], y, beta)  # noqa: E731


def _assert_updates_equal_grad(u, v, total, x, y, trains_feedback, tol=1e-4):
    want_p, want_fb = jax.jit(jax.grad(total, argnums=(0, 1)))(v["params"], v["feedback"], x, y)
    jax.tree.map(lambda a, b: _close(a, b, tol), u["params"], want_p)
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(want_p)) > 1e-4
    if trains_feedback:  # the heads' own parameters (feedback variables of the host layer)
        hosts = sorted(k for k in want_fb if float(jnp.abs(jax.tree.leaves(want_fb[k])[0]
                                                           ).max()) > 0)
        assert sorted(u["feedback"]) == sorted(want_fb)
        jax.tree.map(lambda a, b: _close(a, b, tol), u["feedback"], want_fb)
        assert hosts, "no head parameter received a gradient"
    else:
        assert "feedback" not in u


def test_adjusted_cosine_of_one_hot_labels_by_hand():
    s = ref.adjusted_cosine(jax.nn.one_hot(jnp.array([0, 1, 2, 0]), 3))
    want = jnp.array([[1, -.5, -.5, 1], [-.5, 1, -.5, -.5], [-.5, -.5, 1, -.5],
                      [1, -.5, -.5, 1]])  # 1 within a class, −1/(C − 1) across
    _close(s, want, 1e-6)


def test_predsim_heads_and_layers_follow_the_paper_loss():
    """Every update = grad of CE(out) + Σ_l predsim_l, predsim written from the paper."""
    model, rule = MLP(num_classes=3, widths=(8, 8)), rules.create("predsim", sim_features=4)
    v = _init(model, rule, KEY, X)
    u = _updates(model, rule, v, X, Y)
    total = _local_objective(_mlp_local, _predsim_head(rule.beta))
    _assert_updates_equal_grad(u, v, total, X, jax.nn.one_hot(Y, 3), True)


@pytest.mark.parametrize("name", ["local_fixed", "predsim"])
def test_local_rules_on_a_residual_net_follow_their_local_losses(name):
    """TinyResNet (stem, identity block, stride-2 projection block): every update equals
    ``jax.grad`` of global CE + the local losses with every layer input cut (shortcuts not)."""
    model, rule = TinyResNet(widths=(4, 8), strides=(1, 2)), rules.create(name)
    x = jax.random.normal(KEY, (4, 8, 8, 3))
    v = _init(model, rule, KEY, x)
    u = _updates(model, rule, v, x, Y[:4])
    head = (_predsim_head(rule.beta) if name == "predsim"
            else lambda h, fb, y: ref.fixed_classifier_loss(h, fb["LC"], y))
    total = _local_objective(ref.tiny_resnet_local, head)
    _assert_updates_equal_grad(u, v, total, x, jax.nn.one_hot(Y[:4], 3), name == "predsim")
