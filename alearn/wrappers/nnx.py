"""``alearn.wrap_nnx``: ``flax.nnx`` models trained by any learning rule.

Every ``nnx.Linear`` and ``nnx.Conv`` inside the model is switched (once, at wrap time) to
a subclass whose call routes the layer's ``dot_general`` / ``conv_general_dilated``
through :func:`alearn.layers.apply_rule`'s machinery (the ``rule_linear`` custom VJP); all
of NNX's own logic (dtype promotion, padding, bias) is kept. Feedback weights are
:class:`Feedback` variables (an ``nnx.Variable`` subclass) on the layer itself, named like
the Linen collection's leaves (``B`` for FA/KP/WM/ASAP, ``D`` for DFA), so ``nnx.state``,
``nnx.jit``, ``nnx.grad`` and ``nnx.Optimizer`` see them like any other state:

    model = alearn.wrap_nnx(MyModel(rngs=nnx.Rngs(0)), rule, sample_x, jax.random.key(1))
    opt = nnx.Optimizer(model, alearn.nnx_transform(rule, optax.sgd(0.1), model),
                        wrt=alearn.nnx_trainable(rule))
    grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, alearn.nnx_trainable(rule)))(model)
    opt.update(model, grads)

The per-call :class:`~alearn.layers.Tape` (layer order, DFA's carrier of the output's
shape, shared activations) is created by :class:`WrappedNNX` and reaches the layers
through a context variable that is set only during the wrapper's call; a routed layer
called outside it raises instead of silently running backprop.
"""

from __future__ import annotations

import contextvars
import math
from typing import Any, Callable, Sequence

import jax
import optax
from flax import nnx, traverse_util

from alearn.layers.linear import run_rule
from alearn.layers.tape import Tape
from alearn.rules.base import Rule
from alearn.wrappers.linen import path_matches
from alearn.wrappers.ops import conv_op, dot_op

Array = jax.Array

_TAPE: contextvars.ContextVar[Any] = contextvars.ContextVar("alearn_nnx_tape", default=None)


class Feedback(nnx.Variable):
    """Feedback weights of a learning rule (FA's B, DFA's D, ...); not forward parameters."""


class _Call:
    """State of one wrapped call: the tape, and the feedback key while initialising."""

    def __init__(self, tape: Tape, key: Array | None):
        self.tape, self.key = tape, key


def _rule_apply(layer: nnx.Module, op: Any, x: Array, kernel: Array) -> Array:
    call = _TAPE.get()
    if call is None:
        raise RuntimeError(
            f"{type(layer).__name__} was routed through a learning rule by alearn.wrap_nnx "
            "and must be called through the wrapper (wrapped(x)), not the inner model")
    tape, rule = call.tape, call.tape.rule
    present = sorted(n for n, v in vars(layer).items() if isinstance(v, Feedback))
    extra = sorted(set(present) - set(rule.feedback_names))
    if extra:
        raise ValueError(f"{type(layer).__name__} holds feedback {extra} but the wrapper's rule "
                         f"{rule.name!r} uses {list(rule.feedback_names) or 'none'}")
    feedback = {}
    for name in rule.feedback_names:
        if name not in present:
            if call.key is None:
                raise ValueError(f"{type(layer).__name__} has no feedback {name!r} for rule "
                                 f"{rule.name!r}: wrap the model with this rule")
            key = jax.random.fold_in(call.key, tape.layer_index)
            setattr(layer, name, Feedback(rule.draw_feedback(tape, name, key, op)))
        feedback[name] = getattr(layer, name)[...]
    return run_rule(tape, op, x, kernel, feedback)


def _swapped(layer: nnx.Module, attr: str, fn: Callable, call: Callable) -> Any:
    saved = getattr(layer, attr)
    object.__setattr__(layer, attr, fn)
    try:
        return call()
    finally:
        object.__setattr__(layer, attr, saved)


class RuleLinear(nnx.Linear):
    """``nnx.Linear`` whose backward pass is the wrapper's learning rule."""

    def __call__(self, inputs: Array, *args: Any, **kwargs: Any) -> Array:
        def dot_general(lhs, rhs, dims, precision=None, preferred_element_type=None, **kw):
            del kw  # out_sharding: single-device semantics
            return _rule_apply(self, dot_op(lhs, rhs, dims, precision, preferred_element_type),
                               lhs, rhs)
        return _swapped(self, "dot_general", dot_general,
                        lambda: nnx.Linear.__call__(self, inputs, *args, **kwargs))


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
            return _rule_apply(self, op, lhs, rhs)
        return _swapped(self, "conv_general_dilated", conv,
                        lambda: nnx.Conv.__call__(self, inputs, *args, **kwargs))


_ROUTED = {nnx.Linear: RuleLinear, nnx.Conv: RuleConv}
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


class WrappedNNX(nnx.Module):
    """An NNX model whose Linear/Conv layers learn by ``rule`` (see module docstring)."""

    def __init__(self, model: nnx.Module, rule: Rule, sample_x: Array, key: Array,
                 blocks: Sequence[str] = ()):
        if not isinstance(model, nnx.Module):
            raise TypeError(f"alearn.wrap_nnx expects a flax.nnx.Module, got "
                            f"{type(model).__name__} (for Linen models use alearn.wrap)")
        name = type(model).__name__
        blocks = (blocks,) if isinstance(blocks, str) else tuple(blocks)
        layers, paths, matched = [], [], set()
        for path, node in nnx.iter_graph(model):
            if not isinstance(node, nnx.Module) or node is model:
                continue
            p = "/".join(str(k) for k in path)
            paths.append(p)
            cls = type(node)
            if cls in _ROUTED:
                node.__class__ = _ROUTED[cls]
                layers.append(p)
            for pattern in blocks:
                if path_matches(p, pattern):
                    matched.add(pattern)
                    node.__class__ = _blocked(type(node))
                    break
        if not layers:
            raise ValueError(f"alearn.wrap_nnx({name}): no nnx.Linear or nnx.Conv layer found; "
                             f"submodules: {paths or 'none'}. Nothing would learn by the rule.")
        if missing := [p for p in blocks if p not in matched]:
            raise ValueError(f"alearn.wrap_nnx({name}, blocks=...): pattern(s) {missing} match "
                             f"no module path; the model has: {paths}")
        self.model, self.rule = model, rule
        self.out_shape = self._dry_run_shape(sample_x)
        before = nnx.state(model)  # the feedback-creating pass must not move BN stats/RNGs
        self._call(sample_x, key=key)
        nnx.update(model, before)

    def _dry_run_shape(self, x: Array) -> tuple[int, ...]:
        """The output's shape without the batch axis (abstract BP pass on a copy)."""
        from alearn.rules.bp import BP  # pylint: disable=import-outside-toplevel
        graphdef, state = nnx.split(self.model)

        def run(st):
            token = _TAPE.set(_Call(Tape(BP(), x.shape[0], 1), None))
            try:
                return nnx.merge(graphdef, st)(x)
            finally:
                _TAPE.reset(token)

        out = jax.eval_shape(run, state)
        if not isinstance(out, jax.ShapeDtypeStruct) or not out.shape:
            raise ValueError(f"alearn.wrap_nnx({type(self.model).__name__}): the model must "
                             f"return one array (batch, ...), got {out}")
        return tuple(out.shape[1:])

    def _call(self, x: Array, *args: Any, key: Array | None = None, **kwargs: Any) -> Array:
        tape = Tape(self.rule, x.shape[0], math.prod(self.out_shape))
        token = _TAPE.set(_Call(tape, key))
        try:
            out = self.model(x, *args, **kwargs)
        finally:
            _TAPE.reset(token)
        if tuple(out.shape[1:]) != self.out_shape:
            raise ValueError(f"output shape {out.shape}: the wrapper was built for outputs "
                             f"(batch, {', '.join(map(str, self.out_shape))})")
        return tape.finish(out.reshape(out.shape[0], -1)).reshape(out.shape)

    def __call__(self, x: Array, *args: Any, **kwargs: Any) -> Array:
        """The model's output; its backward pass follows the wrapper's rule."""
        return self._call(x, *args, **kwargs)


def wrap_nnx(model: nnx.Module, rule: Rule, sample_x: Array, key: Array, *,
             blocks: Sequence[str] = ()) -> WrappedNNX:
    """Routes every ``nnx.Linear``/``nnx.Conv`` of ``model`` (in place) through ``rule``.

    One forward pass on ``sample_x`` creates each layer's :class:`Feedback` variables from
    ``key`` (folded with the layer index). ``blocks``: module-path patterns whose inputs
    start activation-sharing groups. Returns the wrapper, an ``nnx.Module``.
    """
    return WrappedNNX(model, rule, sample_x, key, blocks)


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
    ``nnx.grad`` of the loss.
    """
    if not isinstance(model, WrappedNNX):
        raise TypeError(f"nnx_value_and_updates needs alearn.wrap_nnx(model, ...), got "
                        f"{type(model).__name__}")
    x, rest = batch[0], batch[1:]

    def objective(m):
        out = m(x)
        return loss_fn(out, *rest), out

    diff = nnx.DiffState(0, nnx_trainable(model.rule))
    return nnx.value_and_grad(objective, argnums=diff, has_aux=True)(model)
