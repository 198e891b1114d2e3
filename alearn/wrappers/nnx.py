"""``alearn.wrap_nnx``: ``flax.nnx`` models trained by any learning rule.

Every routed layer (:data:`SUPPORTED_NNX`: ``nnx.Linear``, ``LinearGeneral``, ``Einsum``,
``Conv``, ``ConvTranspose``, ``Embed.attend``; hence ``nnx.MultiHeadAttention`` and the
``nnx.nn.recurrent`` cells, which are built from them) is switched (once, at wrap time) to
a subclass whose call routes the layer's product through the rule's custom VJP
(:func:`alearn.layers.linear.run_rule`); all of NNX's own logic (dtype promotion, padding,
bias) is kept. Feedback weights are :class:`Feedback` variables (an ``nnx.Variable``
subclass) on the layer itself, named like the Linen collection's leaves (``B`` for
FA/KP/WM/ASAP, ``D`` for DFA), so ``nnx.state``, ``nnx.jit``, ``nnx.grad``,
``nnx.Optimizer`` and lifted transforms (``nnx.scan`` over ``nnx.vmap``-built blocks) see
them like any other state: they are drawn at wrap time *outside* any trace, stacked like
the kernel they serve, and carry its partition metadata and sharding (B) or are
replicated (D)::

    model = alearn.wrap_nnx(MyModel(rngs=nnx.Rngs(0)), rule, sample_x, jax.random.key(1))
    opt = nnx.Optimizer(model, alearn.nnx_transform(rule, optax.sgd(0.1), model),
                        wrt=alearn.nnx_trainable(rule))
    (loss, out), grads = alearn.nnx_value_and_updates(loss_fn, model, x, y)
    opt.update(model, grads)

The per-call :class:`~alearn.layers.Tape` is created by :class:`WrappedNNX` and reaches
the layers through a context variable set only during the wrapper's call; a routed layer
called outside it raises instead of silently running backprop.

DFA: :func:`nnx_value_and_updates` computes δ_L by a first forward pass (on a clone: no
state moves) and hands it to every layer (``Tape(error=)``), so layers inside ``nnx.scan``
bodies work; ``wrapped(x, output_error=e)`` does the same by hand. Where one array feeds
several routed layers (q/k/v), only the first owns D and sends δ_L D to it.

No silent BP: at wrap time (every rule but BP) each ``nnx.Param`` must be the kernel of a
routed layer, element-wise (biases, norm scales/biases, ``nnx.Embed`` tables) or listed
in ``exclude=``; anything else raises, naming the parameter path.
"""

from __future__ import annotations

import contextvars
import math
import types
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx, traverse_util
from flax.nnx.nn import linear as nnx_linear
from jax import lax

from alearn.layers.linear import run_rule
from alearn.layers.tape import Tape
from alearn.rules.base import Rule
from alearn.rules.bp import BP
from alearn.wrappers._match import param_matches, path_matches
from alearn.wrappers.ops import DotGeneralOp, EinsumOp, conv_op, dot_op
from alearn.wrappers.ops_transpose import ConvTransposeOp

Array = jax.Array

SUPPORTED_NNX = ("flax.nnx.Linear, LinearGeneral, Einsum, Conv, ConvTranspose, Embed.attend "
                 "(so MultiHeadAttention and the nnx.nn.recurrent cells)")

_TAPE: contextvars.ContextVar[Any] = contextvars.ContextVar("alearn_nnx_tape", default=None)
_ID = "_alearn_layer_id"  # static attribute: the routed layer's number (survives split/merge)


class Feedback(nnx.Variable):
    """Feedback weights of a learning rule (FA's B, DFA's D, ...); not forward parameters."""


class _Call:
    """State of one wrapped call: the tape, the arrays already consumed by a routed layer
    (first consumer owns DFA's D), and, on the wrap-time pass, the per-layer records."""

    def __init__(self, tape: Tape, records: dict | None = None):
        self.tape, self.records = tape, records
        self.seen: list[Array] = []


def _owns(call: _Call, entry: Any) -> bool:
    if entry is None:
        return True
    if any(a is entry for a in call.seen):
        return False
    call.seen.append(entry)
    return True


def _swapped(layer: nnx.Module, swaps: dict, call: Callable) -> Any:
    saved = {a: getattr(layer, a) for a in swaps}
    for a, fn in swaps.items():
        object.__setattr__(layer, a, fn)
    try:
        return call()
    finally:
        for a, v in saved.items():
            object.__setattr__(layer, a, v)


def _dot_fn(layer: nnx.Module, entry: Any) -> Callable:
    def dot_general(lhs, rhs, dims, precision=None, preferred_element_type=None, **kw):
        del kw  # out_sharding: the rule's product keeps the operands' shardings
        op = dot_op(lhs, rhs, dims, precision, preferred_element_type)
        return _rule_apply(layer, op, lhs, rhs, entry)
    return dot_general


class RuleLinear(nnx.Linear):
    """``nnx.Linear`` whose backward pass is the wrapper's learning rule."""

    def __call__(self, inputs: Array, *args: Any, **kwargs: Any) -> Array:
        return _swapped(self, {"dot_general": _dot_fn(self, inputs)},
                        lambda: nnx.Linear.__call__(self, inputs, *args, **kwargs))


class RuleLinearGeneral(nnx.LinearGeneral):
    """``nnx.LinearGeneral`` (attention's q/k/v/out) through the rule."""

    def __call__(self, inputs: Array, *args: Any, **kwargs: Any) -> Array:
        return _swapped(self, {"dot_general": _dot_fn(self, inputs), "dot_general_cls": None},
                        lambda: nnx.LinearGeneral.__call__(self, inputs, *args, **kwargs))


class RuleEinsum(nnx.Einsum):
    """``nnx.Einsum`` through the rule."""

    def __call__(self, inputs: Array, *args: Any, **kwargs: Any) -> Array:
        def einsum(eq, lhs, rhs, precision=None, preferred_element_type=None, **kw):
            del kw
            op = EinsumOp(in_shape=tuple(lhs.shape), kernel_shape=tuple(rhs.shape),
                          dtype=rhs.dtype, equation=eq.replace(" ", ""), precision=precision,
                          preferred_element_type=preferred_element_type)
            return _rule_apply(self, op, lhs, rhs, inputs)
        return _swapped(self, {"einsum_op": einsum},
                        lambda: nnx.Einsum.__call__(self, inputs, *args, **kwargs))


class RuleConv(nnx.Conv):
    """``nnx.Conv`` whose backward pass is the wrapper's learning rule."""

    def __call__(self, inputs: Array, *args: Any, **kwargs: Any) -> Array:
        def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                 precision=None, preferred_element_type=None, **kw):
            del kw
            op = conv_op(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                         dimension_numbers, feature_group_count, batch_group_count, precision,
                         preferred_element_type)
            return _rule_apply(self, op, lhs, rhs, inputs)
        return _swapped(self, {"conv_general_dilated": conv},
                        lambda: nnx.Conv.__call__(self, inputs, *args, **kwargs))


class RuleConvTranspose(nnx.ConvTranspose):
    """``nnx.ConvTranspose`` through the rule (``lax.conv_transpose`` of Flax's module is
    swapped for the call)."""

    def __call__(self, inputs: Array, *args: Any, **kwargs: Any) -> Array:
        def conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None,
                           dimension_numbers=None, transpose_kernel=False, precision=None,
                           preferred_element_type=None):
            op = ConvTransposeOp(
                in_shape=tuple(lhs.shape), kernel_shape=tuple(rhs.shape), dtype=rhs.dtype,
                strides=tuple(strides), padding=padding if isinstance(padding, str)
                else tuple(tuple(p) for p in padding),
                rhs_dilation=None if rhs_dilation is None else tuple(rhs_dilation),
                dimension_numbers=dimension_numbers, transpose_kernel=transpose_kernel,
                precision=precision, preferred_element_type=preferred_element_type)
            return _rule_apply(self, op, lhs, rhs, inputs)
        proxy = types.SimpleNamespace(**{k: getattr(lax, k) for k in dir(lax)
                                         if not k.startswith("__")})
        proxy.conv_transpose = conv_transpose
        saved = nnx_linear.lax
        nnx_linear.lax = proxy
        try:
            return nnx.ConvTranspose.__call__(self, inputs, *args, **kwargs)
        finally:
            nnx_linear.lax = saved


class RuleEmbed(nnx.Embed):
    """``nnx.Embed``: the lookup is unchanged (element-wise in the table), ``attend`` (a
    tied output head) goes through the rule with the table as kernel."""

    def attend(self, query: Array, out_sharding: Any = None) -> Array:
        del out_sharding
        q, emb = self.promote_dtype((query, self.embedding[...]), dtype=self.dtype)
        op = DotGeneralOp(in_shape=tuple(q.shape), kernel_shape=tuple(emb.shape),
                          dtype=emb.dtype, dimension_numbers=(((q.ndim - 1,), (1,)), ((), ())))
        return _rule_apply(self, op, q, emb, query)


_ROUTED = {nnx.Linear: RuleLinear, nnx.LinearGeneral: RuleLinearGeneral,
           nnx.Einsum: RuleEinsum, nnx.Conv: RuleConv, nnx.ConvTranspose: RuleConvTranspose,
           nnx.Embed: RuleEmbed}
_KERNEL = {RuleLinear: "kernel", RuleLinearGeneral: "kernel", RuleEinsum: "kernel",
           RuleConv: "kernel", RuleConvTranspose: "kernel", RuleEmbed: "embedding"}
# parameters that act element-wise on the data (they take the local error, as the rules say)
_ELEMENTWISE: dict[type, tuple[str, ...]] = {
    RuleLinear: ("bias",), RuleLinearGeneral: ("bias",), RuleEinsum: ("bias",),
    RuleConv: ("bias",), RuleConvTranspose: ("bias",), RuleEmbed: ("embedding",),
    nnx.LayerNorm: ("scale", "bias"), nnx.BatchNorm: ("scale", "bias"),
    nnx.RMSNorm: ("scale",), nnx.GroupNorm: ("scale", "bias"),
    nnx.InstanceNorm: ("scale", "bias"),
}
_BLOCKED: dict[type, type] = {}


def _blocked(cls: type) -> type:
    """A subclass of ``cls`` that marks its input as a block input on the tape."""
    if cls not in _BLOCKED:
        def __call__(self, x, *args, **kwargs):  # pylint: disable=invalid-name
            call = _TAPE.get()
            if call is not None:
                call.tape.block(x)
            return cls.__call__(self, x, *args, **kwargs)
        _BLOCKED[cls] = type(f"Blocked{cls.__name__}", (cls,), {"__call__": __call__})
    return _BLOCKED[cls]


def _routed_base(cls: type) -> type | None:
    for base in cls.__mro__:
        if base in _KERNEL:
            return base
    return None


def _elementwise(cls: type, name: str) -> bool:
    return any(name in _ELEMENTWISE.get(base, ()) for base in cls.__mro__)


def _path(path: tuple) -> str:
    return "/".join(str(k) for k in path)


def _meta(var: nnx.Variable) -> dict:
    meta = dict(var.get_metadata())
    return {k: v for k, v in meta.items() if k not in ("hijax", "ref")}


def _placeholders(tape: Tape, op: Any, names: Sequence[str]) -> dict:
    """Zeros of each feedback's shape (the wrap-time pass only traces)."""
    rule, key = tape.rule, jax.random.key(0)
    out = {}
    for n in names:
        s = jax.eval_shape(lambda k, n=n: rule.draw_feedback(tape, n, k, op), key)
        out[n] = jnp.zeros(s.shape, s.dtype)
    return out


class _Recorder(_Call):
    """The wrap-time passes: per layer id, (op, input_received, layer_index, names)."""

    def record(self, lid: Any, op: Any) -> dict:
        tape = self.tape
        names = tape.rule.layer_feedback_names(tape, op)
        self.records.setdefault(lid, (op, tape.input_received, tape.layer_index, tuple(names)))
        return _placeholders(tape, op, names)


def _rule_apply(layer: nnx.Module, op: Any, x: Array, kernel: Array,
                entry: Any) -> Array:
    call = _TAPE.get()
    if call is None:
        raise RuntimeError(
            f"{type(layer).__name__} was routed through a learning rule by alearn.wrap_nnx "
            "and must be called through the wrapper (wrapped(x)), not the inner model")
    tape, rule = call.tape, call.tape.rule
    tape.input_received = not _owns(call, entry)
    try:
        if isinstance(call, _Recorder):
            feedback = call.record(getattr(layer, _ID, None), op)
        else:
            want = tuple(rule.layer_feedback_names(tape, op))
            present = sorted(n for n, v in vars(layer).items() if isinstance(v, Feedback))
            if sorted(want) != present:
                raise ValueError(
                    f"{type(layer).__name__} holds feedback {present} but rule {rule.name!r} "
                    f"needs {list(want) or 'none'} there: wrap the model with this rule")
            feedback = {n: getattr(layer, n)[...] for n in want}
        if not any(_explicit(a) for a in (x, kernel, *feedback.values())):
            return run_rule(tape, op, x, kernel, feedback)
        # explicit sharding (jax.set_mesh + nnx.with_partitioning): the rule's products are
        # formed on replicated operands (their transposes would be ambiguous otherwise), and
        # the output gets the sharding the layer's own product gives it
        out = jax.eval_shape(op.apply, x, kernel).sharding
        y = run_rule(tape, op, _replicated(x), _replicated(kernel),
                     {k: _replicated(v) for k, v in feedback.items()})
        return jax.sharding.reshard(y, out.spec)
    finally:
        tape.input_received = tape.receivers


def _explicit(a: Any) -> bool:
    """Whether ``a`` is partitioned over an explicit mesh axis."""
    sharding = getattr(jax.typeof(a), "sharding", None)
    spec = getattr(sharding, "spec", None)
    return spec is not None and any(s is not None for s in spec)


def _replicated(a: Array) -> Array:
    return jax.sharding.reshard(a, jax.sharding.PartitionSpec()) if _explicit(a) else a


class WrappedNNX(nnx.Module):
    """An NNX model whose supported layers learn by ``rule`` (see module docstring)."""

    def __init__(self, model: nnx.Module, rule: Rule, sample_x: Array, key: Array,
                 blocks: Sequence[str] = (), exclude: Sequence[str] = ()):
        if not isinstance(model, nnx.Module):
            raise TypeError(f"alearn.wrap_nnx expects a flax.nnx.Module, got "
                            f"{type(model).__name__} (for Linen models use alearn.wrap)")
        name = type(model).__name__
        blocks = (blocks,) if isinstance(blocks, str) else tuple(blocks)
        exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
        layers: list[tuple[str, nnx.Module]] = []
        modules: dict[tuple, nnx.Module] = {}
        paths, matched = [], set()
        for path, node in nnx.iter_graph(model):
            if not isinstance(node, nnx.Module):
                continue
            modules[tuple(path)] = node
            p = _path(path)
            if node is not model:
                paths.append(p)
            cls = type(node)
            if cls in _ROUTED:
                node.__class__ = _ROUTED[cls]
            if _routed_base(type(node)) is not None:
                object.__setattr__(node, _ID, len(layers))
                layers.append((p, node))
            for pattern in blocks:
                if node is not model and path_matches(p, pattern):
                    matched.add(pattern)
                    node.__class__ = _blocked(type(node))
                    break
        if not layers:
            raise ValueError(f"alearn.wrap_nnx({name}): no supported layer ({SUPPORTED_NNX}) "
                             f"found; submodules: {paths or 'none'}. Nothing would learn by "
                             "the rule.")
        if missing := [p for p in blocks if p not in matched]:
            raise ValueError(f"alearn.wrap_nnx({name}, blocks=...): pattern(s) {missing} match "
                             f"no module path; the model has: {paths}")
        if rule.name != "bp":
            _check_coverage(model, modules, exclude, rule, name)
        self.model, self.rule = model, rule
        self.blocks, self.exclude = blocks, exclude
        self.out_shape = self._record(BP(), sample_x, {})
        records: dict = {}
        if rule.name != "bp":
            self._record(rule, sample_x, records)
        self._draw(records, layers, sample_x.shape[0], key)

    def _record(self, rule: Rule, x: Array, records: dict) -> tuple[int, ...]:
        """The output's shape without the batch axis (abstract pass, nothing moves);
        fills ``records`` with what each routed layer needs under ``rule``."""
        graphdef, state = nnx.split(self.model)
        out_shape = getattr(self, "out_shape", (1,))
        error = jnp.zeros((x.shape[0], *out_shape)) if rule.needs_carrier else None

        def run(st):
            tape = Tape(rule, x.shape[0], math.prod(out_shape), out_shape=out_shape,
                        error=error)
            token = _TAPE.set(_Recorder(tape, records))
            try:
                return nnx.merge(graphdef, st)(x)
            finally:
                _TAPE.reset(token)

        out = jax.eval_shape(run, state)
        if not isinstance(out, jax.ShapeDtypeStruct) or not out.shape:
            raise ValueError(f"alearn.wrap_nnx({type(self.model).__name__}): the model must "
                             f"return one array (batch, ...), got {out}")
        return tuple(out.shape[1:])

    def _draw(self, records: dict, layers: list, batch: int, key: Array) -> None:
        """Creates each layer's Feedback variables, outside any trace: stacked like the
        kernel (``nnx.vmap``-built blocks), B with the kernel's sharding and metadata."""
        rule = self.rule
        tape = Tape(rule, batch, math.prod(self.out_shape), out_shape=self.out_shape)
        for lid, (_, layer) in enumerate(layers):
            if lid not in records:
                continue
            op, received, index, names = records[lid]
            tape.input_received, tape.layer_index = received, index
            kvar = getattr(layer, _KERNEL[_routed_base(type(layer))])
            kval = kvar[...]
            prefix = tuple(kval.shape[:kval.ndim - len(op.kernel_shape)])
            for j, fname in enumerate(names):
                k = jax.random.fold_in(jax.random.fold_in(key, lid), j)

                def draw(kk, fname=fname):
                    return rule.draw_feedback(tape, fname, kk, op)
                if prefix:
                    keys = jax.random.split(k, math.prod(prefix)).reshape(prefix)
                    for _ in prefix:
                        draw = jax.vmap(draw)
                    val = draw(keys)
                else:
                    val = draw(k)
                if val.shape == kval.shape:  # B: laid out and partitioned like the kernel
                    sharding = getattr(kval, "sharding", None)
                    if sharding is not None:
                        val = jax.device_put(val, sharding)
                    setattr(layer, fname, Feedback(val, **_meta(kvar)))
                else:
                    setattr(layer, fname, Feedback(val))
        tape.finished = True

    def __call__(self, x: Array, *args: Any, output_error: Array | None = None,
                 **kwargs: Any) -> Array:
        """The model's output; its backward pass follows the wrapper's rule.

        ``output_error``: δ_L (shape of the output) for rules that need it (DFA); given, it
        reaches every layer directly (works inside ``nnx.scan``); omitted, it arrives as
        the cotangent of a carrier added to the output.
        """
        rule = self.rule
        batch = x.shape[0]
        error = output_error if rule.needs_carrier else None
        if error is not None:
            error = _replicated(error)
        if error is not None and tuple(error.shape) != (batch, *self.out_shape):
            raise ValueError(f"output_error has shape {error.shape}, the output is "
                             f"{(batch, *self.out_shape)}")
        tape = Tape(rule, batch, math.prod(self.out_shape), out_shape=self.out_shape,
                    error=error)
        token = _TAPE.set(_Call(tape))
        try:
            out = self.model(x, *args, **kwargs)
        except jax.errors.UnexpectedTracerError as exc:
            if rule.needs_carrier and error is None:
                raise ValueError(
                    f"rule {rule.name!r} was applied without output_error= to a model with "
                    "layers inside a lifted transform (nnx.scan, nnx.vmap, ...): use "
                    "alearn.nnx_value_and_updates (it gives δ_L up front) or pass "
                    "output_error=") from exc
            raise
        finally:
            _TAPE.reset(token)
        if tuple(out.shape[1:]) != self.out_shape:
            raise ValueError(f"output shape {out.shape}: the wrapper was built for outputs "
                             f"(batch, {', '.join(map(str, self.out_shape))})")
        if tape.carrier is None and type(rule).on_finish is Rule.on_finish:
            tape.finished = True  # nothing to add: no reshape (keeps explicit shardings)
            return out
        return tape.finish(out.reshape(out.shape[0], -1)).reshape(out.shape)


def _check_coverage(model: nnx.Module, modules: dict, exclude: tuple, rule: Rule,
                    name: str) -> None:
    """Every Param: a routed kernel, element-wise, or excluded; else ValueError."""
    bad = []
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Param) or not path:
            continue
        owner, attr = modules.get(tuple(path[:-1])), str(path[-1])
        ok = owner is not None and (
            (_routed_base(type(owner)) is not None
             and attr == _KERNEL[_routed_base(type(owner))])
            or _elementwise(type(owner), attr))
        p = _path(path)
        if not ok and not any(param_matches(p, pat) for pat in exclude):
            bad.append(p)
    if bad:
        raise ValueError(
            f"alearn.wrap_nnx({name}): parameter(s) {sorted(bad)} are neither the kernel of a "
            f"routed layer ({SUPPORTED_NNX}) nor element-wise (biases, norm scales, nnx.Embed "
            f"tables), so rule {rule.name!r} would leave them on exact backprop. Express the "
            "map with one of those layers, or list them in alearn.wrap_nnx(..., exclude=(...)) "
            "(parameter or module paths, '/'-separated, fnmatch per segment) to train them by "
            "BP on purpose")


def wrap_nnx(model: nnx.Module, rule: Rule, sample_x: Array, key: Array, *,
             blocks: Sequence[str] = (), exclude: Sequence[str] = ()) -> WrappedNNX:
    """Routes every supported layer of ``model`` (in place, :data:`SUPPORTED_NNX`) through
    ``rule``.

    An abstract pass on ``sample_x`` records each layer's operator; its :class:`Feedback`
    variables are then drawn from ``key`` (folded with the layer number). ``blocks``:
    module-path patterns whose inputs start activation-sharing groups. ``exclude``:
    parameter or module-path patterns allowed to stay on exact BP (otherwise any
    ``nnx.Param`` that is not a routed kernel or element-wise raises). Returns the wrapper,
    an ``nnx.Module``.
    """
    return WrappedNNX(model, rule, sample_x, key, blocks, exclude)


def nnx_trainable(rule: Rule) -> Any:
    """The ``nnx`` filter of what the optimizer updates: Param, plus Feedback if trained."""
    return nnx.Any(nnx.Param, Feedback) if rule.trains_feedback else nnx.Param


def _keys(path: tuple) -> tuple:
    out = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(getattr(k, attr))
                break
    return tuple(out)


def _split(tree: Any, fb_paths: frozenset) -> tuple[dict, Any, list]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    params, feedback, order = {}, {}, []
    for path, leaf in leaves:
        keys = _keys(path)
        order.append(keys)
        (feedback if keys in fb_paths else params)[keys] = leaf
    dicts = {"params": traverse_util.unflatten_dict(params)}
    if feedback:
        dicts["feedback"] = traverse_util.unflatten_dict(feedback)
    return dicts, treedef, order


def _join(dicts: dict, treedef: Any, order: list, fb_paths: frozenset) -> Any:
    flat_p = traverse_util.flatten_dict(dicts["params"])
    flat_f = traverse_util.flatten_dict(dicts.get("feedback", {}))
    return treedef.unflatten([(flat_f if k in fb_paths else flat_p)[k] for k in order])


def nnx_transform(rule: Rule, optimizer: optax.GradientTransformation,
                  model: nnx.Module) -> optax.GradientTransformation:
    """``optax.chain(rule.transform(), optimizer)`` for ``nnx.Optimizer`` on ``model``.

    The rule's parameter-side part (KP's decay, ASAP's freeze-and-decay, ...) works on
    ``{"params": ..., "feedback": ...}`` dicts; ``nnx.Optimizer`` hands its transformation
    pure State trees, so this adapter sorts their leaves by the paths of ``model``'s
    :class:`Feedback` variables and puts the result back in place.
    """
    inner = rule.transform()
    fb_state = nnx.as_pure(nnx.state(model, Feedback))
    fb_paths = frozenset(_keys(p) for p, _ in jax.tree_util.tree_flatten_with_path(fb_state)[0])

    def init(params):
        return inner.init(_split(params, fb_paths)[0])

    def update(updates, state, params=None):
        dicts, treedef, order = _split(updates, fb_paths)
        pdicts = None if params is None else _split(params, fb_paths)[0]
        new, state = inner.update(dicts, state, pdicts)
        return _join(new, treedef, order, fb_paths), state

    return optax.chain(optax.GradientTransformation(init, update), optimizer)


def nnx_value_and_updates(loss_fn: Callable[..., Array], model: WrappedNNX, *batch: Any
                          ) -> tuple[tuple[Array, Array], Any]:
    """((loss, outputs), updates) for an NNX-wrapped model; ``loss_fn(outputs, *batch[1:])``.

    The model runs on ``batch[0]``; ``updates`` is an ``nnx.State`` of the variables
    :func:`nnx_trainable` selects (what ``nnx.Optimizer.update`` takes). For BP it is
    ``nnx.grad`` of the loss. For rules that need the output error (DFA) δ_L =
    ∂loss/∂outputs comes from a first forward pass on a clone of the model (no state
    moves; XLA shares the forward under jit) and is handed to every layer, so layers
    inside ``nnx.scan`` bodies work.
    """
    if not isinstance(model, WrappedNNX):
        raise TypeError(f"nnx_value_and_updates needs alearn.wrap_nnx(model, ...), got "
                        f"{type(model).__name__}")
    x, rest = batch[0], batch[1:]
    given = {}
    if model.rule.needs_carrier:  # δ_L first: the output error of a forward pass on a clone
        first = nnx.clone(model)
        out0 = first(x, output_error=jnp.zeros((x.shape[0], *model.out_shape)))
        error = jax.grad(lambda o: loss_fn(o, *rest))(out0)
        given = {"output_error": jax.lax.stop_gradient(error)}

    def objective(m):
        out = m(x, **given)
        return loss_fn(out, *rest), out

    diff = nnx.DiffState(0, nnx_trainable(model.rule))
    return nnx.value_and_grad(objective, argnums=diff, has_aux=True)(model)
