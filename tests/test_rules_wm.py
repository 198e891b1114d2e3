"""Weight mirror (ASAP thesis eq. 2.6, Akrout et al. 2019) against independent oracles.

- mirror mode through the trainer's hook: ``ΔB = η_B mean_i[(W ξ_i) ξ_iᵀ] − λ_B B`` in NumPy
  with the hook's noise (drawn from the same key path: step key → layer → mirror step);
- the ordinary (engaged) step on a conv net with a residual block: FA, written in plain JAX
  as a straight-through layer whose value is ``x W`` and whose input cotangent goes
  through B.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

import alearn
from alearn.rules import create
from alearn.train import create_train_state, setup, train_step
from tests._as_models import TinyResNet

sg = jax.lax.stop_gradient


def _mirror_numpy(kernels: dict, feedback: dict, key, rule) -> dict:
    """``rule.mirror_steps`` mirror updates of every B, in NumPy.

    Noise of layer i (feedback paths in sorted order) at mirror step t is
    ``σ N(0, 1)`` drawn with ``fold_in(fold_in(key, i), t)`` in the shape (batch, receptive
    field): (batch, in) for a dense kernel, (batch, kh, kw, cin) for a conv kernel, each
    sample one input patch of the layer.
    """
    out = {}
    for i, path in enumerate(sorted(feedback)):
        w = np.asarray(kernels[path[:-1] + ("kernel",)], np.float64)
        b = np.asarray(feedback[path], np.float64)
        w2 = w.reshape(-1, w.shape[-1])  # (receptive field, out)
        for t in range(rule.mirror_steps):
            k = jax.random.fold_in(jax.random.fold_in(key, i), t)
            xi = rule.noise_std * np.asarray(
                jax.random.normal(k, (rule.mirror_batch, *w.shape[:-1])), np.float64)
            xi = xi.reshape(rule.mirror_batch, -1)
            y = xi @ w2  # W ξ for every sample
            b = b + rule.mirror_lr * (xi.T @ y / rule.mirror_batch).reshape(w.shape) \
                - rule.mirror_decay * b
        out[path] = b
    return out


def _mirror_run(model, x, y, rule, steps):
    opt = optax.chain(rule.transform(), optax.sgd(0.1))
    state = create_train_state(model, rule, opt, jax.random.key(0), x)
    step = jax.jit(lambda s, b: train_step(model, rule, opt, s, b,
                                           setup.step_hook_for(rule, model)))
    states = [state]
    for _ in range(steps):
        states.append(step(states[-1], {"image": x, "label": y})[0])
    return states


def _check_hook(model, x, y, rule, steps):
    """B stays put on steps that are not multiples of mirror_every, else equals NumPy."""
    states = _mirror_run(model, x, y, rule, steps)
    mirrored = 0
    for before, after in zip(states[:-1], states[1:]):
        fb0 = traverse_util.flatten_dict(before.fixed["feedback"])
        fb1 = traverse_util.flatten_dict(after.fixed["feedback"])
        n = int(after.step)
        if n % rule.mirror_every:
            for p in fb0:
                np.testing.assert_array_equal(np.asarray(fb1[p]), np.asarray(fb0[p]))
            continue
        # the hook's key: fold_in(state key, step before the update); W after the update
        key = jax.random.fold_in(jax.random.wrap_key_data(before.key), int(before.step))
        kernels = traverse_util.flatten_dict(after.trainable["params"])
        want = _mirror_numpy(kernels, fb0, key, rule)
        for p in fb0:
            np.testing.assert_allclose(np.asarray(fb1[p]), want[p], rtol=1e-4, atol=1e-5,
                                       err_msg="/".join(p))
            assert float(np.abs(want[p] - np.asarray(fb0[p])).max()) > 1e-3  # B moved
        mirrored += 1
    assert mirrored >= 1


def test_wm_hook_applies_numpy_mirror_updates_every_k_steps_on_an_mlp():
    from tests._wt_models import data
    model, x, y = data("dense")
    rule = create("wm", mirror_every=2, mirror_steps=3, mirror_batch=16)
    _check_hook(model, x, y, rule, steps=2)


def _resnet_data():
    kx, ky = jax.random.split(jax.random.key(3))
    return (TinyResNet(widths=(4, 8), strides=(1, 2)), jax.random.normal(kx, (4, 8, 8, 3)),
            jax.random.randint(ky, (4,), 0, 3))


def test_wm_hook_on_a_residual_net_mirrors_convs_and_the_projection():
    model, x, y = _resnet_data()
    rule = create("wm", mirror_every=1, mirror_steps=2, mirror_batch=8, mirror_decay=0.05)
    _check_hook(model, x, y, rule, steps=1)


def _fa_conv(p, b, x, stride=1):
    """Value conv(x, W) + bias; ∂/∂W at x; input cotangent through B (straight-through)."""
    conv = lambda a, k: jax.lax.conv_general_dilated(  # noqa: E731
        a, k, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    through_b = conv(x, sg(b))
    out = conv(sg(x), p["kernel"]) + through_b - sg(through_b)
    return out + p["bias"] if "bias" in p else out


def _fa_tiny_resnet_loss(params, fb, x, y):
    relu = jax.nn.relu
    c = lambda name, h, s=1: _fa_conv(params[name], fb[name]["B"], h, s)  # noqa: E731
    h0 = relu(c("Conv_0", x))
    h1 = relu(c("Conv_2", relu(c("Conv_1", h0))) + h0)
    h2 = relu(c("Conv_4", relu(c("Conv_3", h1, 2))) + c("Conv_5", h1, 2))
    pooled = h2.mean(axis=(1, 2))
    d, bd = params["Dense_0"], fb["Dense_0"]["B"]
    logits = sg(pooled) @ d["kernel"] + pooled @ sg(bd) - sg(pooled @ bd) + d["bias"]
    logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    return -jnp.mean(jnp.sum(jax.nn.one_hot(y, 3) * logp, axis=1))


def test_wm_engaged_step_on_a_residual_net_is_plain_jax_fa():
    """WM's ordinary updates on TinyResNet = jax.grad of a straight-through FA network."""
    model, x, y = _resnet_data()
    rule = create("wm")
    v = alearn.init(model, rule, jax.random.key(1), x)
    u = jax.jit(alearn.rule_updates, static_argnums=(0, 1))(model, rule, v, x, y)
    assert "feedback" not in u  # B learns only in mirror mode
    want = jax.jit(jax.grad(_fa_tiny_resnet_loss))(v["params"], v["feedback"], x, y)
    bp = jax.jit(jax.grad(lambda p: _fa_tiny_resnet_loss(
        p, {k: {"B": q["kernel"]} for k, q in p.items()}, x, y)))(v["params"])
    for layer, g in want.items():
        for leaf in g:
            np.testing.assert_allclose(np.asarray(u["params"][layer][leaf]),
                                       np.asarray(g[leaf]), rtol=1e-4, atol=1e-6,
                                       err_msg=f"{layer}/{leaf}")
    # the oracle can fail: below the top, FA with random B is not BP
    assert float(jnp.abs(want["Conv_0"]["kernel"] - bp["Conv_0"]["kernel"]).max()) > 1e-3
