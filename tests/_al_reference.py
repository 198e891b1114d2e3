"""An independent plain-JAX reference of one Associated Learning step (not public API).

Written from ALGORITHMS.md Part B, not from ``alearn.al``: every block function is spelled
out with ``jnp`` on the parameter dicts (no Flax module, no ``alearn`` code), the local
losses are eq. 2.7 / 2.6 with explicit ``stop_gradient`` at the block boundary, and Adam
is written out (Kingma & Ba, optax's defaults b1 0.9, b2 0.999, eps 1e-8). The knobs that
``alearn.al`` exposes (reduction, L2 coefficient and scope, target gradient, lr,
autoencoder lr factor) are explicit arguments, so a test reads them from the same
``BlockDef`` / network arguments and keeps working when a default changes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


# ---- layers on parameter dicts ------------------------------------------------------------
def dense(p, x):
    x = x.reshape(x.shape[0], -1)
    return x @ p["kernel"] + p["bias"]


def conv(p, x, stride=1):
    y = jax.lax.conv_general_dilated(x, p["kernel"], (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def batchnorm(p, stats, x, momentum=0.9, eps=1e-5):
    """Train-mode BN: batch statistics (biased variance), running averages updated."""
    mean = x.mean((0, 1, 2))
    var = ((x - mean) ** 2).mean((0, 1, 2))
    y = (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]
    new = {"mean": momentum * stats["mean"] + (1 - momentum) * mean,
           "var": momentum * stats["var"] + (1 - momentum) * var}
    return y, new


# ---- the AL step --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RefBlock:
    """Block i as plain functions; f and b take (params, stats, x) and return (out, stats)."""

    f: Callable
    g: Callable
    h: Callable
    b: Callable


@dataclasses.dataclass(frozen=True)
class Knobs:
    lr: float
    ae_lr_mult: float
    reduction: str  # "sum": ‖·‖² per example, batch mean (eq. 2.7); "mean": MSE (seed code)
    weight_decay: float = 0.0
    l2_parts: tuple = ("f", "b")  # whose kernels carry λ/2‖W‖²
    assoc_trains_g: bool = False


def _kernels_sq(tree) -> jax.Array:
    flat = jax.tree_util.tree_leaves_with_path(tree)
    return sum((jnp.sum(v * v) for path, v in flat if path[-1].key == "kernel"), jnp.zeros(()))


def block_losses(rb: RefBlock, k: Knobs, params, stats, s_prev, y_prev):
    """(L_i + L'_i, (L_i, L'_i, s_i, y_i, new stats)) with inputs cut by stop_gradient."""
    s_prev, y_prev = sg(s_prev), sg(y_prev)
    s, st_f = rb.f(params["f"], stats["f"], s_prev)
    z, st_b = rb.b(params["b"], stats["b"], s)
    y = rb.g(params["g"], y_prev)
    target = y if k.assoc_trains_g else sg(y)
    d = (z - target) ** 2
    assoc = d.reshape(d.shape[0], -1).sum(1).mean() if k.reduction == "sum" else d.mean()
    assoc = assoc + 0.5 * k.weight_decay * sum(
        (_kernels_sq(params[part]) for part in k.l2_parts), jnp.zeros(()))
    ae = jnp.mean((rb.h(params["h"], y) - y_prev) ** 2)
    return assoc + ae, (assoc, ae, s, y, {"f": st_f, "b": st_b})


def adam_init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return {"t": 0, "m": zeros, "v": zeros}


def adam(params, grads, state, lr, b1=0.9, b2=0.999, eps=1e-8):
    t = state["t"] + 1
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], grads)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], grads)
    new = jax.tree.map(lambda p, m, v: p - lr * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t))
                                                                     + eps), params, m, v)
    return new, {"t": t, "m": m, "v": v}


def init_opt(params):
    """Per block: Adam over the forward side (f, b) and over the autoencoder side (g, h)."""
    return [{"fwd": adam_init({"f": p["f"], "b": p["b"]}),
             "ae": adam_init({"g": p["g"], "h": p["h"]})} for p in params]


def train_step(blocks, k: Knobs, params, stats, opt, x, num_classes, labels):
    """One sequential AL step over all blocks; returns (params, stats, opt, losses)."""
    s, y = x, jax.nn.one_hot(labels, num_classes)
    new_p, new_s, new_o, losses = [], [], [], []
    for rb, p, st, o in zip(blocks, params, stats, opt):
        grads, (assoc, ae, s, y, st) = jax.grad(
            lambda q: block_losses(rb, k, q, st, s, y), has_aux=True)(p)
        fwd, o_f = adam({"f": p["f"], "b": p["b"]}, {"f": grads["f"], "b": grads["b"]},
                        o["fwd"], k.lr)
        aes, o_a = adam({"g": p["g"], "h": p["h"]}, {"g": grads["g"], "h": grads["h"]},
                        o["ae"], k.ae_lr_mult * k.lr)
        new_p.append({**fwd, **aes})
        new_s.append(st)
        new_o.append({"fwd": o_f, "ae": o_a})
        losses.append((assoc, ae))
    return new_p, new_s, new_o, losses


def check_no_cross_block_gradients(net, states, all_params, x, labels, assoc_trains_g=False):
    """d(L_i or L'_i)/d(params of block j) == 0 exactly for j != i, with the block inputs
    computed from the raw inputs through blocks < i without any stop_gradient of ours; each
    block's own parts (f, b for L_i; g, h for L'_i; g too when ``assoc_trains_g``) get a
    non-zero gradient."""
    import alearn.al as al

    def loss(ps, i, which):
        s, y = x, al.targets(net, labels)
        for j in range(i):
            bd = net.blocks[j]
            s, _ = al.apply_fn(bd.f, ps[j]["f"], states[j].model_state["f"], s, True)
            y = bd.g.apply({"params": ps[j]["g"]}, y)
        bd = net.blocks[i]
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
