"""``wrap_nnx``'s routed layers: NNX layer subclasses whose product goes through the rule.

Each subclass swaps the layer's product function (``dot_general``, ``einsum_op``,
``conv_general_dilated``, flax's ``lax.conv_transpose``) for the call; the rest of NNX's
logic (dtype promotion, padding, bias) is kept. The per-call state (:class:`Call`) reaches
the layers through a context variable set only while :class:`~alearn.WrappedNNX` runs.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import jax
from flax import nnx
from flax.nnx.nn import linear as nnx_linear
from jax import lax

from alearn._layers.linear import run_rule
from alearn.wrappers._match import param_matches
from alearn.wrappers._nnx_call import (ID, PATH, TAPE, Call, Recorder, explicit,
                                       read_feedback, replicated)
from alearn.wrappers.ops import DotGeneralOp, EinsumOp, conv_op, dot_op
from alearn.wrappers.ops_transpose import conv_transpose_op

Array = jax.Array

SUPPORTED_NNX = ("flax.nnx.Linear, LinearGeneral, Einsum, Conv, ConvTranspose, Embed.attend "
                 "(so MultiHeadAttention and the nnx.nn.recurrent cells)")

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
        return rule_apply(layer, op, lhs, rhs, entry)
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
            return rule_apply(self, op, lhs, rhs, inputs)
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
            return rule_apply(self, op, lhs, rhs, inputs)
        return _swapped(self, {"conv_general_dilated": conv},
                        lambda: nnx.Conv.__call__(self, inputs, *args, **kwargs))


class RuleConvTranspose(nnx.ConvTranspose):
    """``nnx.ConvTranspose`` through the rule (``lax.conv_transpose`` of Flax's module is
    swapped for the call)."""

    def __call__(self, inputs: Array, *args: Any, **kwargs: Any) -> Array:
        def conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None,
                           dimension_numbers=None, transpose_kernel=False, precision=None,
                           preferred_element_type=None):
            op = conv_transpose_op(lhs, rhs, strides, padding, rhs_dilation,
                                   dimension_numbers, transpose_kernel, precision,
                                   preferred_element_type)
            return rule_apply(self, op, lhs, rhs, inputs)
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
        return rule_apply(self, op, q, emb, query)


ROUTED = {nnx.Linear: RuleLinear, nnx.LinearGeneral: RuleLinearGeneral,
          nnx.Einsum: RuleEinsum, nnx.Conv: RuleConv, nnx.ConvTranspose: RuleConvTranspose,
          nnx.Embed: RuleEmbed}
KERNEL = {RuleLinear: "kernel", RuleLinearGeneral: "kernel", RuleEinsum: "kernel",
          RuleConv: "kernel", RuleConvTranspose: "kernel", RuleEmbed: "embedding"}
# parameters that act element-wise on the data (they take the local error, as the rules say)
ELEMENTWISE: dict[type, tuple[str, ...]] = {
    RuleLinear: ("bias",), RuleLinearGeneral: ("bias",), RuleEinsum: ("bias",),
    RuleConv: ("bias",), RuleConvTranspose: ("bias",), RuleEmbed: ("embedding",),
    nnx.LayerNorm: ("scale", "bias"), nnx.BatchNorm: ("scale", "bias"),
    nnx.RMSNorm: ("scale",), nnx.GroupNorm: ("scale", "bias"),
    nnx.InstanceNorm: ("scale", "bias"),
}


def routed_base(cls: type) -> type | None:
    for base in cls.__mro__:
        if base in KERNEL:
            return base
    return None


def elementwise(cls: type, name: str) -> bool:
    return any(name in ELEMENTWISE.get(base, ()) for base in cls.__mro__)


def rule_apply(layer: nnx.Module, op: Any, x: Array, kernel: Array, entry: Any) -> Array:
    """The routed product of ``layer`` under the current call's rule."""
    call: Call | None = TAPE.get()
    if call is None:
        raise RuntimeError(
            f"{type(layer).__name__} was routed through a learning rule by alearn.wrap_nnx "
            "and must be called through the wrapper (wrapped(x)), not the inner model")
    tape, rule = call.tape, call.tape.rule
    source = call.source(entry, getattr(layer, PATH, type(layer).__name__))
    tape.input_received = source != "own"
    try:
        if isinstance(call, Recorder):
            feedback = call.record(getattr(layer, ID, None), op)
        else:
            feedback = read_feedback(layer, tuple(rule.layer_feedback_names(tape, op)), rule)
        if call.tagged is not None:  # the wrap-time check's trace
            return call.tag_map(layer, op, x, kernel, feedback, source)
        if not any(explicit(a) for a in (x, kernel, *feedback.values())):
            return run_rule(tape, op, x, kernel, feedback)
        # explicit sharding (jax.set_mesh + nnx.with_partitioning): the rule's products are
        # formed on replicated operands (their transposes would be ambiguous otherwise), and
        # the output gets the sharding the layer's own product gives it
        out = jax.eval_shape(op.apply, x, kernel).sharding
        y = run_rule(tape, op, replicated(x), replicated(kernel),
                     {k: replicated(v) for k, v in feedback.items()})
        return jax.sharding.reshard(y, out.spec)
    finally:
        tape.input_received = False


def check_coverage(model: nnx.Module, exclude: tuple, rule: Any, name: str) -> None:
    """Every Param: a routed kernel, element-wise, or excluded; else ValueError."""
    modules = {tuple(p): n for p, n in nnx.iter_graph(model) if isinstance(n, nnx.Module)}
    bad = []
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Param) or not path:
            continue
        owner, attr = modules.get(tuple(path[:-1])), str(path[-1])
        ok = owner is not None and (
            (routed_base(type(owner)) is not None
             and attr == KERNEL[routed_base(type(owner))])
            or elementwise(type(owner), attr))
        p = "/".join(str(k) for k in path)
        if not ok and not any(param_matches(p, pat) for pat in exclude):
            bad.append(p)
    if bad:
        raise ValueError(
            f"{name}: parameter(s) {sorted(bad)} are neither the kernel of a "
            f"routed layer ({SUPPORTED_NNX}) nor element-wise (biases, norm scales, nnx.Embed "
            f"tables), so rule {rule.name!r} would leave them on exact backprop. Express the "
            "map with one of those layers, or list them in alearn.wrap_nnx(..., exclude=(...)) "
            "(parameter or module paths, '/'-separated, fnmatch per segment) to train them by "
            "BP on purpose")
