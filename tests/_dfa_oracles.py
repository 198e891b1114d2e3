"""Independent plain-JAX "pure DFA" references for the wrapped zoo models (no alearn import).

Specification (what ``alearn.wrap(model, blocks=...)`` with the DFA rule must compute):

- ``e = δ_L = ∂loss/∂output``, the model output's full shape ((B, K) or (B, T, V)).
- Every linear layer (Dense, DenseGeneral, Conv, ``Embed.attend``) gets the ordinary
  weight gradient of the cotangent ``g`` arriving at its output (``xᵀg``), but sends
  ``reshape(e · D_l)`` to its input instead of ``Wᵀg``, except
  (a) a layer whose input is the input of a block (a module matched by ``blocks=``) sends
      nothing (zeros); a *receiver* at the block input replaces the total gradient arriving
      there by ``reshape(e · D_block)``, so nothing passes a residual shortcut;
      a receiver on the *output* of a module matched by ``receivers=`` likewise replaces
      the gradient arriving at that output by ``reshape(e · D_out)`` (a residual
      sub-block writing into a stream: the stream's gradient never enters it);
  (b) of several layers reading the very same array (q/k/v, conv1 and the projection
      shortcut), only the first in forward order sends; the others send zeros.
- D is either flattened, (prod(out.shape[1:]), prod(x.shape[1:])), ``dx = (e.reshape(B, -1)
  @ D).reshape(x.shape)``, or position-wise when the output has axes between batch and
  features (B, T, V) and x starts with the same (B, T): D (V, prod(x.shape[2:])),
  ``dx[b, t] = e[b, t] @ D``. Both forms are accepted (told apart by D's shape).
- Everything else (biases, norm scales, embedding lookups, positional embeddings,
  activations, pooling, attention's softmax) is ordinary autodiff.

The model input's gradient is discarded, so the first layer reads no D.

Implementation: each forward below is the zoo model written out in ``jax.numpy``/``lax``
and takes a ``Ctx``. ``Ctx()`` is the plain model (``jax.grad`` of it is BP);
``Ctx(feedback, e)`` routes every linear layer through ``dfa_linear`` and every block input
and module output receiver through ``receiver`` (``jax.custom_vjp`` helpers defined here),
so the VJP of the forward with cotangent ``e`` is the DFA update of every parameter (same
tree as ``model.init(...)["params"]``). The feedback tree is the wrapper's
``variables["feedback"]`` layout: a leaf ``D`` at each sending layer's module path
(``feedback["ResNetBlock_1"]["Conv_1"]["D"]``) and at each block module path for its
receiver (``feedback["ResNetBlock_1"]["D"]``), a leaf ``D_out`` at each ``receivers=``
module path (``feedback["block_0"]["LMMlpBlock_0"]["D_out"]``); only the leaves needed are
read, a missing one raises ``KeyError`` naming its path. ``Ctx(taps=...)`` adds zero
perturbations at every point where a D is applied: ``jacobian_feedback`` uses them to
build, for batch 1, the D that makes DFA equal BP exactly (D = ∂output/∂activation), the
self-check of every oracle.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

Path = tuple[str, ...]

OUT = "D_out"  # the leaf of a receiver on a module's output (``receivers=``)


def leaf_of(key: Path) -> tuple[Path, str]:
    """``(module path, leaf name)`` of a feedback point: keys of ``Ctx.points`` are the
    module path for ``D`` and the module path + ``"D_out"`` for an output receiver."""
    if key and key[-1] == OUT:
        return key[:-1], OUT
    return key, "D"


# ----------------------------------------------------------------------------------------
# the DFA primitives
# ----------------------------------------------------------------------------------------


def project(e, d, x_shape, where: str = "layer"):
    """``reshape(e · D)`` to ``x_shape``: flattened or position-wise D (by its shape)."""
    b = e.shape[0]
    flat = (math.prod(e.shape[1:]), math.prod(x_shape[1:]))
    positions = tuple(e.shape[1:-1])
    positionwise = None
    if (positions and tuple(x_shape[1:1 + len(positions)]) == positions
            and len(x_shape) > 1 + len(positions)):
        positionwise = (e.shape[-1], math.prod(x_shape[1 + len(positions):]))
    if tuple(d.shape) == flat:
        out = e.reshape(b, -1) @ d
    elif positionwise is not None and tuple(d.shape) == positionwise:
        out = e.reshape(b, -1, e.shape[-1]) @ d
    else:
        raise ValueError(f"{where}: D has shape {tuple(d.shape)}; for error {e.shape} and "
                         f"activation {tuple(x_shape)} expected {flat} (flattened)"
                         + (f" or {positionwise} (position-wise)" if positionwise else ""))
    return out.reshape(x_shape).astype(e.dtype)


def dfa_linear(fn: Callable, x, w, d, e, where: str = "layer"):
    """``fn(x, w)`` (linear in each of x and w) whose VJP is pure DFA: the weight gets the
    ordinary gradient of the arriving cotangent g; x gets ``reshape(e · d)`` (zeros when
    d is None); d and e get nothing."""

    @jax.custom_vjp
    def f(x, w, d, e):
        return fn(x, w)

    def fwd(x, w, d, e):
        return fn(x, w), (x, w, d, e)

    def bwd(res, g):
        x, w, d, e = res
        _, vjp_w = jax.vjp(lambda w_: fn(x, w_), w)
        (dw,) = vjp_w(g)
        if d is None:
            return jnp.zeros_like(x), dw, None, jnp.zeros_like(e)
        return project(e, d, x.shape, where), dw, jnp.zeros_like(d), jnp.zeros_like(e)

    f.defvjp(fwd, bwd)
    return f(x, w, d, e)


def receiver(h, d, e, where: str = "block"):
    """Identity whose VJP replaces the arriving cotangent by ``reshape(e · d)``."""

    @jax.custom_vjp
    def f(h, d, e):
        return h

    def fwd(h, d, e):
        return h, (d, e, h.shape)

    def bwd(res, g):
        d, e, shape = res
        del g
        return project(e, d, shape, where), jnp.zeros_like(d), jnp.zeros_like(e)

    f.defvjp(fwd, bwd)
    return f(h, d, e)


class Ctx:
    """How a forward runs: plain (``Ctx()``), pure DFA (``Ctx(feedback, e)``), or plain with
    additive perturbations ``taps[path]`` at the points where a D would be applied."""

    def __init__(self, feedback: Any = None, e=None, taps: dict | None = None):
        if (feedback is None) != (e is None):
            raise ValueError("DFA needs both the feedback tree and the output error e")
        self.feedback, self.e, self.taps = feedback, e, taps
        self.points: dict[Path, tuple[int, ...]] = {}  # path -> activation shape, in order

    @property
    def dfa(self) -> bool:
        return self.feedback is not None

    def d(self, path: Path, leaf: str = "D"):
        node = self.feedback
        for i, key in enumerate((*path, leaf)):
            try:
                node = node[key]
            except (KeyError, TypeError) as err:
                raise KeyError(f"feedback has no {leaf} at {'/'.join(path)} (missing "
                               f"{'/'.join((*path, leaf)[:i + 1])}); the DFA oracle needs it"
                               ) from err
        return node

    def tap(self, path: Path, h):
        """A point where D for ``path`` is applied to activation h (recorded, perturbed)."""
        if path in self.points:
            raise ValueError(f"two feedback points at {'/'.join(path)}")
        self.points[path] = tuple(h.shape)
        if self.taps is not None and path in self.taps:
            h = h + self.taps[path]
        return h

    def linear(self, path: Path, fn: Callable, x, w, sends: bool = True):
        """Layer ``path`` computing ``fn(x, w)``. ``sends=False``: its input is a block input
        or was read first by another layer (it sends zeros, reads no D). A sending layer
        taps its own input; one whose input is shared is tapped by the caller first."""
        if sends and path not in self.points:
            x = self.tap(path, x)
        if not self.dfa:
            return fn(x, w)
        d = self.d(path) if sends else None
        return dfa_linear(fn, x, w, d, self.e, "/".join(path))

    def receive(self, path: Path, h):
        """The receiver at the input of block ``path``."""
        h = self.tap(path, h)
        if not self.dfa:
            return h
        return receiver(h, self.d(path), self.e, "/".join(path))

    def receive_out(self, path: Path, h):
        """The receiver on the output h of module ``path`` (``receivers=``; leaf ``D_out``)."""
        key = (*path, OUT)
        h = self.tap(key, h)
        if not self.dfa:
            return h
        return receiver(h, self.d(path, OUT), self.e, "/".join(key))


def dfa_updates(forward: Callable, params, feedback, inputs: tuple, e, **kw):
    """The DFA update of every parameter: VJP of ``forward(params, *inputs, ctx=Ctx(
    feedback, e))`` with cotangent e (same tree as params)."""
    ctx = Ctx(feedback, e)
    out, vjp = jax.vjp(lambda p: forward(p, *inputs, ctx=ctx, **kw), params)
    if out.shape != e.shape:
        raise ValueError(f"e has shape {e.shape}, the output {out.shape}")
    return vjp(e)[0]


def output_error(forward: Callable, params, inputs: tuple, loss_fn: Callable, *targets, **kw):
    """``(output, e)``: the plain forward's output, ``e = ∂loss_fn(output, *targets)/∂output``."""
    out = forward(params, *inputs, ctx=Ctx(), **kw)
    return out, jax.grad(lambda o: loss_fn(o, *targets))(out)


def dfa(forward: Callable, params, feedback, inputs: tuple, loss_fn: Callable, *targets,
        **kw):
    """``(updates, e)`` for ``loss_fn(output, *targets)``: e from the plain forward, then
    ``dfa_updates``."""
    _, e = output_error(forward, params, inputs, loss_fn, *targets, **kw)
    return dfa_updates(forward, params, feedback, inputs, e, **kw), e


def jacobian_feedback(forward: Callable, params, inputs: tuple, **kw) -> dict:
    """For batch 1: the feedback tree whose every D is ∂output/∂activation at its point
    (flattened form), with which pure DFA equals BP exactly (the oracles' self-check)."""
    probe = Ctx()
    out = jax.eval_shape(lambda p: forward(p, *inputs, ctx=probe, **kw), params)
    if out.shape[0] != 1:
        raise ValueError(f"jacobian_feedback needs batch 1, got output {out.shape}")
    zeros = {p: jnp.zeros(s) for p, s in probe.points.items()}
    jac = jax.jacrev(lambda t: forward(params, *inputs, ctx=Ctx(taps=t), **kw))(zeros)
    k = math.prod(out.shape[1:])
    tree: dict = {}
    for point, j in jac.items():
        path, leaf = leaf_of(point)
        node = tree
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = j.reshape(k, math.prod(probe.points[point][1:]))
    return tree


# ----------------------------------------------------------------------------------------
# plain-JAX pieces with Flax's numerics
# ----------------------------------------------------------------------------------------


def dense(x, kernel):
    """``nn.Dense`` / ``DenseGeneral(axis=-1)``: contract x's last axis with kernel's first."""
    return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def dense_in2(x, kernel):
    """``DenseGeneral(axis=(-2, -1))`` (attention's ``out``)."""
    return lax.dot_general(x, kernel, (((x.ndim - 2, x.ndim - 1), (0, 1)), ((), ())))


def conv(strides, padding):
    """``nn.Conv`` on NHWC with an HWIO kernel."""
    def fn(x, kernel):
        return lax.conv_general_dilated(x, kernel, strides, padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return fn


def _normalize(x, p, axes, eps, mean=None, var=None):
    if mean is None:
        mean = x.mean(axes, keepdims=True)
        var = jnp.maximum(0.0, (x * x).mean(axes, keepdims=True) - mean * mean)
    mul = lax.rsqrt(var + eps) * p["scale"]
    return (x - mean) * mul + p["bias"]


def layer_norm(x, p, eps=1e-6):
    return _normalize(x, p, (-1,), eps)


def batch_norm(x, p, stats=None, eps=1e-5):
    """Train mode (batch statistics) when stats is None, else the running averages."""
    if stats is None:
        return _normalize(x, p, (0, 1, 2), eps)
    return _normalize(x, p, (0, 1, 2), eps, stats["mean"], stats["var"])


def _add_bias(y, p):
    return y + p["bias"] if "bias" in p else y


# ----------------------------------------------------------------------------------------
# MLP (self-check against known identities)
# ----------------------------------------------------------------------------------------


def mlp_forward(params, x, *, ctx: Ctx, act: Callable = jax.nn.relu):
    """``Dense_0 ... Dense_n`` with ``act`` between (an ``nn.Dense`` chain's param tree)."""
    names = sorted(params, key=lambda n: int(n.split("_")[1]))
    h = x
    for i, n in enumerate(names):
        h = _add_bias(ctx.linear((n,), dense, h, params[n]["kernel"], sends=i > 0), params[n])
        if i < len(names) - 1:
            h = act(h)
    return h


# ----------------------------------------------------------------------------------------
# zoo ResNet, blocks=("ResNetBlock_*",)
# ----------------------------------------------------------------------------------------


def resnet_forward(params, x, *, ctx: Ctx, batch_stats=None):
    """``tests._flax_zoo.ResNet`` (train mode if batch_stats is None) as DFA sees it with
    ``blocks=("ResNetBlock_*",)``: receivers at every block input; inside a block Conv_0
    and conv_proj read the block input (send nothing), Conv_1 sends; Dense_0 sends."""
    def bn(h, name, scope=None):
        p = params[name] if scope is None else params[scope][name]
        if batch_stats is None:
            return batch_norm(h, p)
        return batch_norm(h, p, batch_stats[name] if scope is None else batch_stats[scope][name])

    h = ctx.linear(("conv_init",), conv((2, 2), [(3, 3), (3, 3)]), x,
                   params["conv_init"]["kernel"], sends=False)
    h = jax.nn.relu(bn(h, "bn_init"))
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
    blocks = sorted((n for n in params if n.startswith("ResNetBlock_")),
                    key=lambda n: int(n.split("_")[1]))
    for n in blocks:
        p = params[n]
        h = ctx.receive((n,), h)
        stride = (2, 2) if "conv_proj" in p else (1, 1)
        y = ctx.linear((n, "Conv_0"), conv(stride, "SAME"), h, p["Conv_0"]["kernel"],
                       sends=False)
        y = jax.nn.relu(bn(y, "BatchNorm_0", n))
        y = ctx.linear((n, "Conv_1"), conv((1, 1), "SAME"), y, p["Conv_1"]["kernel"])
        y = bn(y, "BatchNorm_1", n)
        r = h
        if "conv_proj" in p:
            r = ctx.linear((n, "conv_proj"), conv(stride, "SAME"), h, p["conv_proj"]["kernel"],
                           sends=False)
            r = bn(r, "norm_proj", n)
        h = jax.nn.relu(r + y)
    h = h.mean(axis=(1, 2))
    return _add_bias(ctx.linear(("Dense_0",), dense, h, params["Dense_0"]["kernel"]),
                     params["Dense_0"])


def resnet_dfa(params, feedback, x, loss_fn, *targets, batch_stats=None):
    """``(updates, e)``: pure DFA on the zoo ResNet for ``loss_fn(logits, *targets)``."""
    return dfa(resnet_forward, params, feedback, (x,), loss_fn, *targets,
               batch_stats=batch_stats)


# ----------------------------------------------------------------------------------------
# zoo TransformerLM, blocks=("block_*",)
# ----------------------------------------------------------------------------------------


def _attention(ctx: Ctx, path: Path, p, y, mask):
    """Flax MHA self-attention; q/k/v read the same y: only ``query`` sends."""
    y = ctx.tap((*path, "query"), y)
    q = _add_bias(ctx.linear((*path, "query"), dense, y, p["query"]["kernel"]), p["query"])
    k = _add_bias(ctx.linear((*path, "key"), dense, y, p["key"]["kernel"], sends=False),
                  p["key"])
    v = _add_bias(ctx.linear((*path, "value"), dense, y, p["value"]["kernel"], sends=False),
                  p["value"])
    q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k)
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits)
    a = jnp.einsum("...hqk,...khd->...qhd", weights, v)
    return _add_bias(ctx.linear((*path, "out"), dense_in2, a, p["out"]["kernel"]), p["out"])


LM_BLOCK_INPUTS = ("block",)
LM_SUB_BLOCKS = ("attention", "mlp")
LM_RECEIVERS = {
    "block": 'blocks=("block_*",): a receiver at each DecoderBlock input',
    "attention": 'receivers=("block_*/MultiHeadDotProductAttention_0",): on its output',
    "mlp": 'receivers=("block_*/LMMlpBlock_0",): on its output',
    "embedding": 'receivers=("posembed_output",): on the (token + position) embedding',
}


def lm_forward(params, tokens, *, ctx: Ctx, receivers: tuple[str, ...] = LM_BLOCK_INPUTS,
               stop_shortcuts: bool = False):
    """``tests._flax_zoo.TransformerLM`` (deterministic) as DFA sees it with the receivers
    named in ``receivers`` (keys of ``LM_RECEIVERS``): ``LM_BLOCK_INPUTS`` is
    ``blocks=("block_*",)`` (a receiver at each block input), ``LM_SUB_BLOCKS`` the wrap
    that the lm1b-style block needs, ``receivers=("block_*/MultiHeadDotProductAttention_0",
    "block_*/LMMlpBlock_0")`` (receivers on the attention's and the MLP's outputs, the
    residual stream itself plain autodiff). In every case query/out/Dense_0/Dense_1 send
    (key/value share query's input) and ``embed``'s attend sends.

    ``stop_shortcuts``: the DecoderBlock variant with ``lax.stop_gradient`` on the stream
    operand of both residual adds (``x = a + sg(inputs)``, ``return sg(x) + z``)."""
    unknown = set(receivers) - set(LM_RECEIVERS)
    if unknown:
        raise ValueError(f"lm_forward: unknown receivers {sorted(unknown)}; "
                         f"choose from {sorted(LM_RECEIVERS)}")
    sg = lax.stop_gradient if stop_shortcuts else (lambda a: a)
    emb = params["embed"]["embedding"]
    t = tokens.shape[1]
    y = jnp.take(emb, tokens, axis=0)
    y = y + params["posembed_output"]["pos_embedding"][:, :t, :]
    if "embedding" in receivers:
        y = ctx.receive_out(("posembed_output",), y)
    mask = jnp.tril(jnp.ones((t, t), bool))[None, None]
    blocks = sorted((n for n in params if n.startswith("block_")),
                    key=lambda n: int(n.split("_")[1]))
    for n in blocks:
        p = params[n]
        x = ctx.receive((n,), y) if "block" in receivers else y
        a = layer_norm(x, p["LayerNorm_0"])
        mha = "MultiHeadDotProductAttention_0"
        a = _attention(ctx, (n, mha), p[mha], a, mask)
        if "attention" in receivers:
            a = ctx.receive_out((n, mha), a)
        x = a + sg(x)
        z = layer_norm(x, p["LayerNorm_1"])
        mp = p["LMMlpBlock_0"]
        z = _add_bias(ctx.linear((n, "LMMlpBlock_0", "Dense_0"), dense, z,
                                 mp["Dense_0"]["kernel"]), mp["Dense_0"])
        z = jax.nn.gelu(z)
        z = _add_bias(ctx.linear((n, "LMMlpBlock_0", "Dense_1"), dense, z,
                                 mp["Dense_1"]["kernel"]), mp["Dense_1"])
        if "mlp" in receivers:
            z = ctx.receive_out((n, "LMMlpBlock_0"), z)
        y = sg(x) + z
    y = layer_norm(y, params["encoderdecoder_norm"])
    logits = ctx.linear(("embed",), lambda h, table: jnp.dot(h, table.T), y, emb)
    return logits / jnp.sqrt(y.shape[-1])


def lm_dfa(params, feedback, tokens, loss_fn, *targets, **kw):
    """``(updates, e)``: pure DFA on the zoo TransformerLM for ``loss_fn(logits, *targets)``
    (``kw``: ``receivers=``, ``stop_shortcuts=`` of ``lm_forward``)."""
    return dfa(lm_forward, params, feedback, (tokens,), loss_fn, *targets, **kw)


def feedback_points(forward: Callable, params, inputs: tuple, **kw):
    """``(output shape, {path: activation shape})`` of every point where a D is applied."""
    probe = Ctx()
    out = jax.eval_shape(lambda p: forward(p, *inputs, ctx=probe, **kw), params)
    return out.shape, dict(probe.points)


def random_feedback(forward: Callable, params, inputs: tuple, key, *,
                    sequence: str = "positionwise", **kw) -> dict:
    """A feedback tree of N(0, 1/fan_in) D's at every point (for the oracles' own tests; the
    comparisons with the wrapper take the wrapper's feedback instead). ``sequence``:
    "positionwise" (default, where the shapes allow it) or "flatten"."""
    out_shape, points = feedback_points(forward, params, inputs, **kw)
    positions = tuple(out_shape[1:-1])
    tree: dict = {}
    for i, (point, shape) in enumerate(sorted(points.items())):
        if (sequence == "positionwise" and positions
                and tuple(shape[1:1 + len(positions)]) == positions
                and len(shape) > 1 + len(positions)):
            dshape = (out_shape[-1], math.prod(shape[1 + len(positions):]))
        else:
            dshape = (math.prod(out_shape[1:]), math.prod(shape[1:]))
        path, leaf = leaf_of(point)
        node = tree
        for k in path:
            node = node.setdefault(k, {})
        node[leaf] = jax.random.normal(jax.random.fold_in(key, i), dshape) / math.sqrt(dshape[0])
    return tree
