"""The three products of each convolution of the conv-net benchmark, alearn's forms vs PyTorch.

For every distinct convolution of ResNet-18 and the ASAP AlexNet at ``--width`` (32x32x3
inputs, batch 128), times the forward product, the input cotangent and the weight
cotangent, each jitted alone, in each of alearn's exact forms (XLA's convolution, im2col,
banded where ``banded_fits``, and for the weight cotangent XLA's summed over batch chunks)
and PyTorch's (``torch.nn.functional.conv2d``, ``torch.nn.grad.conv2d_input`` /
``conv2d_weight``: oneDNN on CPU), in ``--rounds`` interleaved rounds; prints the median
milliseconds, GFLOP/s of the best alearn form, and how many times PyTorch's time the best
alearn form takes. The per-layer view behind
docs/notes/perf.md ("Conv nets at realistic widths").

Usage:
  python -m experiments.bench.conv_products [--width=0.25 --rounds=5]
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from alearn._layers import ConvOp, conv_impl
from alearn.models._common import scaled

_WIDTH = flags.DEFINE_float("width", 0.25, "Width multiplier.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
_REPS = flags.DEFINE_integer("reps", 3, "Calls per case and round.")
_BATCH = 128


def conv_shapes(width: float) -> list[tuple[str, tuple, tuple, int, int]]:
    """(name, input NHWC, kernel HWIO, stride, pad) of each distinct conv of both nets."""
    out = []
    w = [scaled(c, width) for c in (64, 128, 256, 512)]
    out.append(("resnet stem", (_BATCH, 32, 32, 3), (3, 3, 3, w[0]), 1, 1))
    side = 32
    for s, c in enumerate(w):
        cin = w[max(s - 1, 0)]
        if s:
            out.append((f"resnet s{s} conv1/2", (_BATCH, side, side, cin), (3, 3, cin, c), 2, 1))
            out.append((f"resnet s{s} shortcut", (_BATCH, side, side, cin), (1, 1, cin, c), 2, 0))
            side //= 2
        out.append((f"resnet s{s} 3x3", (_BATCH, side, side, c), (3, 3, c, c), 1, 1))
    side, cin = 32, 3
    for i, c in enumerate(scaled(v, width) for v in (64, 128, 256)):
        out.append((f"alexnet conv{i}", (_BATCH, side, side, cin), (5, 5, cin, c), 1, 2))
        cin, side = c, side // 2
    return out


def alearn_forms(x_shape, k_shape, stride, pad):
    """{(product, form): (jitted fn, args)}: the forms ``ConvOp`` chooses among for one
    convolution (the banded one only where it ``banded_fits``), and the (x, w, g) used."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=k_shape), jnp.float32)
    op = ConvOp(in_shape=x_shape, kernel_shape=k_shape, strides=(stride, stride),
                padding=((pad, pad), (pad, pad)))
    g = conv_impl.conv_xla(x, w, op.strides, op.pads)
    fits = conv_impl.banded_fits(x_shape, k_shape, op.strides, op.pads)
    out = {}
    for product, label, args in (("apply", "forward", (x, w)), ("input_grad", "input_ct", (g, w)),
                                 ("weight_grad", "weight_ct", (x, g))):
        for form, fn in op._forms(product).items():  # pylint: disable=protected-access
            if form != "banded" or fits:
                out[(label, form)] = (jax.jit(fn), args)
    return out, (np.asarray(x), np.asarray(w), np.asarray(g))


def torch_forms(x, w, g, stride, pad):
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        return {}
    torch.set_num_threads(os.cpu_count() or 1)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
    tg = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())
    F = torch.nn.functional
    return {("forward", "torch"): (lambda: F.conv2d(tx, tw, stride=stride, padding=pad), ()),
            ("input_ct", "torch"): (lambda: torch.nn.grad.conv2d_input(
                tx.shape, tw, tg, stride=stride, padding=pad), ()),
            ("weight_ct", "torch"): (lambda: torch.nn.grad.conv2d_weight(
                tx, tw.shape, tg, stride=stride, padding=pad), ())}


def _time(fn, args, reps):
    out = fn(*args)
    getattr(out, "block_until_ready", lambda: None)()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn(*args)
    getattr(out, "block_until_ready", lambda: None)()
    return (time.perf_counter() - t0) / reps


def main(argv):
    del argv
    cases = {}
    for name, xs, ks, stride, pad in conv_shapes(_WIDTH.value):
        forms, (x, w, g) = alearn_forms(xs, ks, stride, pad)
        forms.update(torch_forms(x, w, g, stride, pad))
        for (prod, form), v in forms.items():
            cases[(name, prod, form)] = v
        cases[(name, "flops", "")] = 2.0 * np.prod(g.shape) * np.prod(ks[:3])
    times = {k: [] for k, v in cases.items() if k[1] != "flops"}
    for _ in range(_ROUNDS.value):
        for k in times:
            fn, args = cases[k]
            times[k].append(_time(fn, args, _REPS.value))
    med = {k: statistics.median(v) for k, v in times.items()}
    names = list(dict.fromkeys(k[0] for k in cases))
    print(f"{'conv':22s} {'product':10s} {'xla':>8s} {'im2col':>8s} {'banded':>8s} {'chunked':>8s}"
          f" {'torch':>8s} {'best/torch':>10s} {'GFLOP/s':>8s}  (ms; chunked: best xla_bN)")
    tot = {"alearn": 0.0, "torch": 0.0}
    for n in names:
        for prod in ("forward", "input_ct", "weight_ct"):
            row = {f: med.get((n, prod, f)) for f in ("xla", "im2col", "banded", "torch")}
            chunked = [v for (n2, p2, f), v in med.items() if n2 == n and p2 == prod
                       and f.startswith("xla_b")]
            row["chunked"] = min(chunked) if chunked else None
            best = min(v for f, v in row.items() if f != "torch" and v is not None)
            tot["alearn"] += best
            tot["torch"] += row["torch"] or 0.0
            cells = " ".join(f"{row[f] * 1e3:8.2f}" if row[f] is not None else f"{'-':>8s}"
                             for f in ("xla", "im2col", "banded", "chunked", "torch"))
            ratio = f"{best / row['torch']:10.2f}" if row["torch"] else f"{'-':>10s}"
            print(f"{n:22s} {prod:10s} {cells} {ratio} {cases[(n, 'flops', '')] / best / 1e9:8.0f}")
    print(f"sum of best alearn forms {tot['alearn'] * 1e3:.1f} ms, "
          f"PyTorch {tot['torch'] * 1e3:.1f} ms (each distinct conv once)")


if __name__ == "__main__":
    app.run(main)
