"""Independent references for the local-learning rules (not public API).

Written from the papers, not from ``alearn.local``: plain ``jnp`` losses and a plain-JAX
forward pass of ``_as_models.TinyResNet`` in which every rule-aware layer's input crosses
``stop_gradient`` (no error crosses a layer) while the identity shortcuts do not, so that
``jax.grad`` of "global CE at the output layer + every local loss" is what a layer-local
rule must hand to the optimizer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


def cross_entropy(logits, y):
    """Mean softmax cross-entropy against one-hot ``y``."""
    logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    return -jnp.mean(jnp.sum(y * logp, axis=1))


def adjusted_cosine(a):
    """Nøkland & Eidnes 2019's S(X): cosine similarity of the row-centred rows of X."""
    a = a.reshape(a.shape[0], -1)
    rows = []
    for i in range(a.shape[0]):
        u = a[i] - jnp.mean(a[i])
        rows.append(u / (jnp.sqrt(jnp.sum(u * u)) + 1e-8))
    u = jnp.stack(rows)
    return u @ u.T


def predsim_loss(h, lc, sim, y, beta):
    """(1 − β) CE(h W_LC, y) + β ‖S(h W_SIM) − S(Y)‖²_F / n² (Nøkland & Eidnes 2019, eq. 2–3).

    S(Y) is the adjusted cosine similarity of the one-hot labels (1 within a class,
    −1/(C − 1) across classes), as the paper defines L_sim; the Frobenius norm is averaged
    over the n² entries (``F.mse_loss`` in the authors' code).
    """
    f = h.reshape(h.shape[0], -1)
    pred = cross_entropy(f @ lc, y)
    n = f.shape[0]
    sim_loss = jnp.sum((adjusted_cosine(f @ sim) - adjusted_cosine(y)) ** 2) / n**2
    return (1.0 - beta) * pred + beta * sim_loss


def fixed_classifier_loss(h, lc, y):
    """Mostafa et al. 2018: CE of a fixed random classifier on the layer output."""
    return cross_entropy(h.reshape(h.shape[0], -1) @ sg(lc), y)


def _conv(p, x, stride=1):
    y = jax.lax.conv_general_dilated(sg(x), p["kernel"], (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"] if "bias" in p else y


def tiny_resnet_local(params, x):
    """TinyResNet(widths=(4, 8), strides=(1, 2)) with every layer input cut.

    Returns (logits, {host layer: its input}) for the layers that host a local head: each
    rule-aware layer but the first, one head per distinct input (the projection shortcut
    reads the block input, which conv1 of the block already hosts).
    """
    relu = jax.nn.relu
    h0 = relu(_conv(params["Conv_0"], x))
    r1 = relu(_conv(params["Conv_1"], h0))
    h1 = relu(_conv(params["Conv_2"], r1) + h0)  # identity shortcut: not cut
    r3 = relu(_conv(params["Conv_3"], h1, 2))
    h2 = relu(_conv(params["Conv_4"], r3) + _conv(params["Conv_5"], h1, 2))
    pooled = h2.mean(axis=(1, 2))
    logits = sg(pooled) @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    return logits, {"Conv_1": h0, "Conv_2": r1, "Conv_3": h1, "Conv_4": r3, "Dense_0": pooled}
