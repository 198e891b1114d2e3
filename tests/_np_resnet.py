"""Hand-written NumPy forward/backward of a tiny ResNet, the oracle for the WT rules.

The network is alearn's ``ResNet`` with ``stage_sizes=(1, 1)``: a conv3x3-BN-ReLU stem,
an identity-shortcut block, a stride-2 block with a projection shortcut (conv1x1-BN),
global mean pooling and a dense classifier with bias; BatchNorm in training mode (batch
statistics, biased variance, eps 1e-5). Everything here is written from the equations
(convolution as a sum over kernel offsets, BatchNorm's backward formula), float64, with no
JAX and no alearn code, so it can judge the rules' updates.

``updates(params, feedback, x, y, mode, fb)`` returns the parameter updates as a flat dict
``{"path/with/slashes": array}`` for

- ``mode="chain"``: the error crosses every linear layer through ``fb(path, W)`` (BP: W,
  FA/KP: B, sign symmetry: sign(W)·magnitude) and adds up where tensors branch (shortcuts);
- ``mode="dfa"``: eq. 2.5 with receivers after the stem's activation, after each block's
  ``relu(bn1)`` and on each block's output: the gradient arriving there is replaced by
  ``reshape(e D)`` with the receiver's D (``feedback[receiver path]``).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5
BLOCKS = (("stage0_block0", 1, False), ("stage1_block0", 2, True))  # name, stride, projection


def conv(x, w, stride, pad):
    """NHWC x, HWIO w: out[n,i,j,o] = sum_{a,b,c} xpad[n, i*s+a, j*s+b, c] w[a,b,c,o]."""
    kh, kw, _, cout = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, cout))
    for a in range(kh):
        for b in range(kw):
            patch = xp[:, a:a + stride * ho:stride, b:b + stride * wo:stride, :]
            out += np.einsum("nijc,co->nijo", patch, w[a, b])
    return out


def conv_wgrad(x, g, kshape, stride, pad):
    """dW[a,b,c,o] = sum_{n,i,j} xpad[n, i*s+a, j*s+b, c] g[n,i,j,o]."""
    kh, kw, _, _ = kshape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = g.shape[1:3]
    dw = np.zeros(kshape)
    for a in range(kh):
        for b in range(kw):
            patch = xp[:, a:a + stride * ho:stride, b:b + stride * wo:stride, :]
            dw[a, b] = np.einsum("nijc,nijo->co", patch, g)
    return dw


def conv_xgrad(g, w, xshape, stride, pad):
    """Transposed convolution: dx[n, i*s+a, j*s+b, c] += g[n,i,j,o] w[a,b,c,o], cropped."""
    kh, kw = w.shape[:2]
    n, h, wd, c = xshape
    dxp = np.zeros((n, h + 2 * pad, wd + 2 * pad, c))
    ho, wo = g.shape[1:3]
    for a in range(kh):
        for b in range(kw):
            dxp[:, a:a + stride * ho:stride, b:b + stride * wo:stride, :] += np.einsum(
                "nijo,co->nijc", g, w[a, b])
    return dxp[:, pad:pad + h, pad:pad + wd, :]


def bn(x, scale, bias):
    mu = x.mean((0, 1, 2))
    var = ((x - mu) ** 2).mean((0, 1, 2))
    xhat = (x - mu) / np.sqrt(var + EPS)
    return xhat * scale + bias, (xhat, var, scale)


def bn_back(dy, cache):
    """(dx, dscale, dbias) of y = scale * (x - mean) / sqrt(var + eps) + bias."""
    xhat, var, scale = cache
    m = lambda t: t.mean((0, 1, 2))  # noqa: E731
    dx = scale / np.sqrt(var + EPS) * (dy - m(dy) - xhat * m(dy * xhat))
    return dx, (dy * xhat).sum((0, 1, 2)), dy.sum((0, 1, 2))


def _relu(a):
    return np.maximum(a, 0.0)


def updates(params, feedback, x, y, mode, fb=None):
    """The rule's parameter updates (see module docstring) as ``{"a/b/kernel": array}``."""
    p = params
    x = np.asarray(x, np.float64)
    out = {}
    # ---- forward
    stem_a = conv(x, p["stem_conv"]["kernel"], 1, 1)
    stem_b, stem_c = bn(stem_a, p["stem_bn"]["scale"], p["stem_bn"]["bias"])
    h = _relu(stem_b)
    caches = []
    for name, s, proj in BLOCKS:
        q = p[name]
        a1 = conv(h, q["conv1"]["kernel"], s, 1)
        b1, c1 = bn(a1, q["bn1"]["scale"], q["bn1"]["bias"])
        h1 = _relu(b1)
        a2 = conv(h1, q["conv2"]["kernel"], 1, 1)
        b2, c2 = bn(a2, q["bn2"]["scale"], q["bn2"]["bias"])
        sc, csc = h, None
        if proj:
            sc, csc = bn(conv(h, q["shortcut_conv"]["kernel"], s, 0),
                         q["shortcut_bn"]["scale"], q["shortcut_bn"]["bias"])
        pre = b2 + sc
        caches.append((name, s, proj, h, b1, c1, h1, c2, csc, pre))
        h = _relu(pre)
    pooled = h.mean((1, 2))
    logits = pooled @ p["classifier"]["kernel"] + p["classifier"]["bias"]
    z = np.exp(logits - logits.max(1, keepdims=True))
    e = (z / z.sum(1, keepdims=True) - np.eye(logits.shape[1])[y]) / x.shape[0]
    # ---- backward
    out["classifier/kernel"] = pooled.T @ e
    out["classifier/bias"] = e.sum(0)

    def receive(path, g):
        if mode == "dfa":
            return (e @ _get(feedback, path)["D"]).reshape(g.shape)
        return g

    def lin_back(path, g_out, x_in, stride, pad, kshape):
        """Weight update of the conv at ``path`` and the error it sends to its input."""
        out[path + "/kernel"] = conv_wgrad(x_in, g_out, kshape, stride, pad)
        if mode == "dfa":
            return np.zeros_like(x_in)
        return conv_xgrad(g_out, fb(path, _get(p, path)["kernel"]), x_in.shape, stride, pad)

    def bn_params(path, db):
        out[path + "/scale"], out[path + "/bias"] = db[1], db[2]
        return db[0]

    dpooled = None if mode == "dfa" else e @ fb("classifier", p["classifier"]["kernel"]).T
    g = None if dpooled is None else np.broadcast_to(
        dpooled[:, None, None, :] / (h.shape[1] * h.shape[2]), h.shape)
    for name, s, proj, h_in, b1, c1, h1, c2, csc, pre in reversed(caches):
        q = p[name]
        g = receive(name + "/receiver2", g if g is not None else np.zeros_like(pre))
        g = g * (pre > 0)
        da2 = bn_params(name + "/bn2", bn_back(g, c2))
        dh1 = lin_back(name + "/conv2", da2, h1, 1, 1, q["conv2"]["kernel"].shape)
        dh1 = receive(name + "/receiver1", dh1) * (b1 > 0)
        da1 = bn_params(name + "/bn1", bn_back(dh1, c1))
        dx = lin_back(name + "/conv1", da1, h_in, s, 1, q["conv1"]["kernel"].shape)
        if proj:
            dsc = bn_params(name + "/shortcut_bn", bn_back(g, csc))
            dx = dx + lin_back(name + "/shortcut_conv", dsc, h_in, s, 0,
                               q["shortcut_conv"]["kernel"].shape)
        else:
            dx = dx + g
        g = dx
    g = receive("stem_receiver", g) * (stem_b > 0)
    da = bn_params("stem_bn", bn_back(g, stem_c))
    out["stem_conv/kernel"] = conv_wgrad(x, da, p["stem_conv"]["kernel"].shape, 1, 1)
    return out


def _get(tree, path):
    for k in path.split("/"):
        tree = tree[k]
    return tree
