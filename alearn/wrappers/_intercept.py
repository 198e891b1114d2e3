"""The Linen interceptor: routes every linear map of one model call through a rule.

Used by :class:`alearn.wrappers.linen.Wrapped` (see its module docstring for the
contract). For each supported layer the module's own logic (parameter creation, dtype
promotion, padding, bias) stays Flax's; only the linear map itself becomes a rule-aware
operator:

- ``nn.Dense`` / ``nn.DenseGeneral`` / ``nn.Conv`` (and subclasses): their
  ``dot_general`` / ``conv_general_dilated`` attribute is swapped for the call;
- ``nn.ConvTranspose``: ``lax.conv_transpose`` as flax's linear module sees it is swapped
  for the call (Flax calls it directly);
- ``nn.Einsum`` and ``nn.Embed.attend`` (tied output heads): their short forward is
  re-stated here;
- ``nn.OptimizedLSTMCell``: re-stated with one rule-aware map per gate (its
  ``DenseParams`` submodules create the same parameters); ``nn.LSTMCell``, ``GRUCell``,
  ``SimpleCell`` and ``MGUCell`` are built from ``nn.Dense`` and need nothing special.

Feedback weights are created as parameters under reserved names (``FB_PREFIX``) so that
lifted transforms (``nn.scan``, ``nn.vmap``, ``nn.remat``, ``nn.RNN``) stack, broadcast or
split them exactly like the parameters they serve; the wrapper moves them to the
``"feedback"`` collection after init and back for every apply.
"""

from __future__ import annotations

import types
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta
from flax.core import tracers as flax_tracers
from flax.linen import linear as flax_linear
from flax.linen import recurrent as flax_recurrent
from jax import lax

from alearn._layers.linear import run_rule
from alearn._layers.receiver import run_receiver
from alearn._layers.tape import Tape
from alearn.wrappers import _coverage, _match
from alearn.wrappers._rows import role_and_group
from alearn.wrappers.ops import SUPPORTED, DotGeneralOp, EinsumOp, conv_op, dot_op
from alearn.wrappers.ops_transpose import conv_transpose_op

Array = jax.Array

FB_PREFIX = "__alearn_feedback__"


def path_of(module: nn.Module) -> str:
    return "/".join(str(p) for p in module.path)


class _Swap:
    """Temporarily replaces a frozen module's ``attr`` (and ``attr_cls``) for one call."""

    def __init__(self, module: Any, attr: str, fn: Any, cls_attr: bool = True):
        self.module, self.attr, self.fn = module, attr, fn
        self.attrs = (attr, attr + "_cls") if cls_attr else (attr,)

    def __enter__(self):
        self.saved = {a: getattr(self.module, a) for a in self.attrs}
        object.__setattr__(self.module, self.attr, self.fn)
        if len(self.attrs) == 2:
            object.__setattr__(self.module, self.attr + "_cls", None)

    def __exit__(self, *exc):
        for a, v in self.saved.items():
            object.__setattr__(self.module, a, v)


class LayerRecord:
    """What one rule-aware map did in a call (for ``describe`` and the checks)."""

    def __init__(self, path: str, kind: str, op: Any, kernel_param: str, feedback: dict,
                 input_from: str):
        self.path, self.kind, self.op = path, kind, op
        self.kernel_param = kernel_param
        self.feedback = feedback  # name -> shape
        self.input_from = input_from  # "own" | "receiver <path>" | "shared with <path>"
        self.role = ""  # the rule's role for the layer (sharing rules: frozen, fa, ...)
        self.sharing = ""  # activation-sharing group


class Interceptor:
    """Routes the supported layers of one model call through the tape's rule."""

    def __init__(self, tape: Tape, blocks: Sequence[str], receivers: Sequence[str],
                 tag: bool = False, inputs: Sequence[Any] = ()):
        """``tag``: run each map / receiver as a named jit (the init-time checks' trace).
        ``inputs``: the model's input arrays (a layer reading one sends DFA nothing down:
        the input's gradient is discarded, so it owns no D)."""
        self.tape, self.blocks, self.receivers = tape, tuple(blocks), tuple(receivers)
        self.tag = tag
        self.base_trace = flax_tracers.current_trace()  # the wrapped call's own trace
        self.inputs = [a for a in inputs if hasattr(a, "shape")]  # jax or NumPy arrays
        self.paths: list[str] = []
        self.layers: list[LayerRecord] = []
        self.matched: set[str] = set()
        self.block_inputs: list[tuple[str, str]] = []  # (path, "block" | "receiver")
        self._seen: list[tuple[Array, str]] = []  # inputs already consumed (array, by)
        self._received: list[tuple[Array, str]] = []  # receiver outputs (array, at)
        self._lstm: dict[str, Array] = {}
        self._lstm_pending: set[str] = set()
        self._entry: Array | None = None
        self._groups: list = []

    # -- module entry ---------------------------------------------------------------
    def __call__(self, next_fun, args, kwargs, context):
        module, method = context.module, context.method_name
        if method == "attend" and isinstance(module, nn.Embed):
            self.layers_path(module)
            return self._attend(module, *args, **kwargs)
        if method != "__call__":
            return next_fun(*args, **kwargs)
        path = self.layers_path(module)
        args = self._mark(module, path, args)
        if self.tape.rule.receives and any(_match.path_matches(path, p)
                                           for p in self.receivers):
            return self._receive_output(module, path, self._route(module, path, next_fun,
                                                                   args, kwargs))
        return self._route(module, path, next_fun, args, kwargs)

    def _route(self, module, path, next_fun, args, kwargs):
        # the array the model code handed to the layer (Flax may convert it before the
        # product): what "the same input" and "a receiver's output" are judged on
        self._entry = args[0] if args else None
        if isinstance(module, (nn.Dense, nn.DenseGeneral)):
            with _Swap(module, "dot_general", self._dot(module, "kernel")):
                return next_fun(*args, **kwargs)
        if isinstance(module, nn.Conv):
            with _Swap(module, "conv_general_dilated", self._conv(module)):
                return next_fun(*args, **kwargs)
        if isinstance(module, nn.ConvTranspose):
            proxy = types.SimpleNamespace(**{k: getattr(lax, k) for k in dir(lax)
                                             if not k.startswith("__")})
            proxy.conv_transpose = self._conv_transpose(module)
            with _Swap(flax_linear, "lax", proxy, cls_attr=False):
                return next_fun(*args, **kwargs)
        if isinstance(module, nn.Einsum):
            return self._einsum(module, *args, **kwargs)
        if isinstance(module, nn.OptimizedLSTMCell):
            return self._optimized_lstm(module, *args, **kwargs)
        if isinstance(module, flax_recurrent.DenseParams) and path in self._lstm_pending:
            return self._dense_params(module, path, next_fun, *args, **kwargs)
        return next_fun(*args, **kwargs)

    def layers_path(self, module: nn.Module) -> str:
        path = path_of(module)
        self.paths.append(path)
        return path

    def _mark(self, module: nn.Module, path: str, args: tuple) -> tuple:
        """Block inputs: sharing marks (``tape.block``) and, for rules that receive (DFA),
        a receiver replacing the gradient that reaches the block input."""
        for pattern in self.receivers:
            if _match.path_matches(path, pattern):
                self.matched.add(pattern)
        for pattern in self.blocks:
            if _match.path_matches(path, pattern):
                self.matched.add(pattern)
                if not args or not isinstance(args[0], jax.Array):
                    return args
                x = args[0]
                self.tape.block(x)
                if self.tape.rule.receives:
                    x = self._receive(module, path, x)
                    self.block_inputs.append((path, "receiver"))
                    return (x,) + tuple(args[1:])
                self.block_inputs.append((path, "block"))
                return args
        return args

    def _receive_output(self, module: nn.Module, path: str, out: Any) -> Any:
        """``receivers=``: a receiver on the module's output (its layers' outputs then
        take ``δ_L D`` alone, e.g. an attention or MLP sub-block writing into a residual
        stream)."""
        if not isinstance(out, jax.Array):
            raise ValueError(f"receivers=: module {path!r} returns "
                             f"{type(out).__name__}, not one array; match a module that does")
        return self._receive(module, path, out, name="D_out")

    def _carrier_here(self, path: str) -> None:
        """The carrier cannot leave a lifted transform's trace (nn.scan, nn.remat, ...)."""
        if self.tape.carrier is not None and flax_tracers.current_trace() != \
                self.base_trace:
            raise ValueError(
                f"layer {path!r} sits inside a lifted transform (nn.scan, nn.remat, nn.vmap, "
                "...), which DFA's carrier cannot leave: apply the model with output_error= "
                "(alearn.value_and_updates does) ")

    def _receive(self, module: nn.Module, path: str, h: Array, name: str = "D") -> Array:
        rule, tape = self.tape.rule, self.tape
        self._carrier_here(path)
        feedback = {}
        for fb in rule.receiver_feedback_names:
            stored = fb if name == "D" else f"{fb}_out"
            feedback[fb] = feedback_param(
                module, stored, lambda key, n=fb: rule.draw_receiver_feedback(
                    tape, n, key, tuple(h.shape), h.dtype))
        if self.tag:
            out = _coverage.tagged(_coverage.TAG_RECEIVER, len(self._received),
                                   lambda a, fb: a * 1)(h, feedback)
        else:
            out = run_receiver(tape, h, feedback)
        self._received.append((out, path))
        return out

    # -- one rule-aware map ---------------------------------------------------------
    def _source(self, x: Array) -> str:
        return _match.input_source(x, self.inputs, self._received, self._seen)

    def apply(self, module: nn.Module, op: Any, x: Array, kernel: Array,
              kind: str, kernel_param: str = "kernel") -> Array:
        tape, rule = self.tape, self.tape.rule
        path = path_of(module)
        self._carrier_here(path)
        entry = self._entry if self._entry is not None else x
        self._entry = None
        source = self._source(entry)
        tape.input_received = source != "own"
        if source == "own":
            self._seen.append((entry, path))
        feedback = {}
        for name in rule.layer_feedback_names(tape, op):
            feedback[name] = feedback_param(
                module, name, lambda key, n=name: rule.draw_feedback(tape, n, key, op))
        self.layers.append(LayerRecord(path, kind, op, kernel_param,
                                       {k: tuple(v.shape) for k, v in feedback.items()}, source))
        if self.tag:
            self._describe(self.layers[-1], op, x, feedback)
            y = _coverage.tagged(_coverage.TAG_MAP, len(self.layers) - 1,
                                 lambda a, w, fb: op.apply(a, w))(x, kernel, feedback)
            tape.layer_index += 1
        else:
            y = run_rule(tape, op, x, kernel, feedback)
        tape.input_received = False
        return y

    def _describe(self, rec: LayerRecord, op: Any, x: Array, feedback: dict) -> None:
        """Role and sharing group of a layer (the tagged trace only; ``describe``)."""
        rec.role, rec.sharing = role_and_group(self.tape, op, x, feedback, self._groups)

    def _dot(self, module, kernel_param):
        kind = type(module).__name__

        def dot_general(lhs, rhs, dimension_numbers, precision=None,
                        preferred_element_type=None, **kw):
            del kw
            op = dot_op(lhs, rhs, dimension_numbers, precision, preferred_element_type)
            return self.apply(module, op, lhs, rhs, kind, kernel_param)
        return dot_general

    def _conv(self, module):
        kind = type(module).__name__

        def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                 rhs_dilation=None, dimension_numbers=None,
                                 feature_group_count=1, batch_group_count=1, precision=None,
                                 preferred_element_type=None, **kw):
            del kw
            op = conv_op(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                         dimension_numbers, feature_group_count, batch_group_count, precision,
                         preferred_element_type)
            return self.apply(module, op, lhs, rhs, kind)
        return conv_general_dilated

    def _conv_transpose(self, module):
        def conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None,
                           dimension_numbers=None, transpose_kernel=False, precision=None,
                           preferred_element_type=None):
            op = conv_transpose_op(lhs, rhs, strides, padding, rhs_dilation,
                                   dimension_numbers, transpose_kernel, precision,
                                   preferred_element_type)
            return self.apply(module, op, lhs, rhs, "ConvTranspose")
        return conv_transpose

    def _einsum(self, module: nn.Einsum, inputs: Array, einsum_str: str | None = None):
        """``flax.linen.Einsum.__call__`` with the einsum routed through the rule."""
        eq = nn.merge_param("einsum_str", module.einsum_str, einsum_str).replace(" ", "")
        if "->" not in eq or eq.count(",") != 1:
            raise ValueError(f"Einsum {path_of(module)!r}: einsum_str {eq!r} must be explicit "
                             "('...->...') with exactly two operands")
        kernel = module.param("kernel", module.kernel_init, module.shape, module.param_dtype)
        bias = None
        if module.use_bias:
            bias_shape, bcast = module._get_bias_shape(eq, inputs, meta.unbox(kernel))  # pylint: disable=protected-access
            bias = module.param("bias", module.bias_init, bias_shape, module.param_dtype)
        inputs, kernel, bias = module.promote_dtype(inputs, kernel, bias, dtype=module.dtype)
        op = EinsumOp(in_shape=tuple(inputs.shape), kernel_shape=tuple(kernel.shape),
                      dtype=kernel.dtype, equation=eq, precision=module.precision,
                      preferred_element_type=module.preferred_element_type)
        y = self.apply(module, op, inputs, kernel, "Einsum")
        if bias is not None:
            y = y + bias.reshape(bcast)
        return y

    def _attend(self, module: nn.Embed, query: Array) -> Array:
        """``flax.linen.Embed.attend`` (a tied output head) through the rule."""
        query, embedding = module.promote_dtype(query, module.embedding, dtype=module.dtype)
        dims = (((query.ndim - 1,), (1,)), ((), ()))
        op = DotGeneralOp(in_shape=tuple(query.shape), kernel_shape=tuple(embedding.shape),
                          dtype=embedding.dtype, dimension_numbers=dims)
        return self.apply(module, op, query, embedding, "Embed.attend", "embedding")

    # -- OptimizedLSTMCell ----------------------------------------------------------
    def _optimized_lstm(self, cell: nn.OptimizedLSTMCell, carry: Any, inputs: Array):
        """``OptimizedLSTMCell.__call__`` re-stated with one rule-aware map per gate.

        Same parameters (``ii``..``io`` without bias, ``hi``..``ho`` with bias), same
        gates; Flax concatenates the four kernels into one product for speed, which is the
        same arithmetic.
        """
        c, h = carry
        hidden = h.shape[-1]
        base = path_of(cell)
        outs = {}
        for comp in "ifgo":
            for side, x, bias, init in (("i", inputs, False, cell.kernel_init),
                                        ("h", h, True, cell.recurrent_kernel_init)):
                name = f"{side}{comp}"
                self._lstm_pending.add(f"{base}/{name}")
                flax_recurrent.DenseParams(
                    features=hidden, use_bias=bias, param_dtype=cell.param_dtype,
                    kernel_init=init, bias_init=cell.bias_init, name=name,
                    parent=cell)(x)
                outs[name] = self._lstm.pop(f"{base}/{name}")
        i = cell.gate_fn(outs["hi"] + outs["ii"])
        f = cell.gate_fn(outs["hf"] + outs["if"])
        g = cell.activation_fn(outs["hg"] + outs["ig"])
        o = cell.gate_fn(outs["ho"] + outs["io"])
        new_c = f * c + i * g
        new_h = o * cell.activation_fn(new_c)
        return (new_c, new_h), new_h

    def _dense_params(self, module, path, next_fun, x):
        kernel, bias = next_fun(x)
        self._lstm_pending.discard(path)
        dtype = self._lstm_dtype(module)
        xx, kk, bb = flax_linear.promote_dtype(x, kernel, bias, dtype=dtype)
        y = self.apply(module, dot_op(xx, kk, (((xx.ndim - 1,), (0,)), ((), ()))), xx, kk,
                       "OptimizedLSTMCell")
        if bb is not None:
            y = y + jnp.reshape(bb, (1,) * (y.ndim - 1) + (-1,))
        self._lstm[path] = y
        return kernel, bias

    @staticmethod
    def _lstm_dtype(module):
        parent = module.parent
        return getattr(parent, "dtype", None)


def feedback_param(module: nn.Module, name: str, init: Callable[[Array], Array]) -> Array:
    """A feedback weight stored as a parameter under a reserved name (see module doc);
    ``init(key)`` draws it from the module's ``"params"`` RNG stream."""
    if module._initialization_allowed:  # pylint: disable=protected-access
        return module.param(FB_PREFIX + name, init)
    # setup-style modules (nn.Embed for attend): create it on the module's scope directly
    return module.scope.param(FB_PREFIX + name, init)
