"""``alearn.wrap``: any unmodified ``flax.linen`` model trained by any learning rule.

The wrapper runs the user's model under ``flax.linen.intercept_methods``. Every call of a
``flax.linen.Dense``, ``DenseGeneral``, ``Conv`` or ``Einsum`` is routed through
:func:`alearn.layers.apply_rule` (the ``rule_linear`` custom VJP): Dense, DenseGeneral and
Conv keep all of Flax's own logic (parameter creation, dtype promotion, padding, bias) and
only their ``dot_general`` / ``conv_general_dilated`` is replaced for the call; Einsum's
short forward is re-stated here. The model's code is never touched. Feedback weights live
in the ``"feedback"`` collection at the intercepted module's path, so
``variables["params"]`` has exactly the tree of ``model.init``.

What the wrapper adds around the model (the native models do this by hand):

- a :class:`~alearn.layers.Tape` per call, so layer order (``tape.layer_index``) drives
  the activation-sharing groups; ``blocks=`` patterns mark block inputs (``tape.block``)
  on entry of every module whose path matches;
- DFA's carrier: zeros of the model output's shape (flattened to (batch, K) for the rule,
  K = prod(output.shape[1:]), so regression and sequence outputs work), threaded through
  every intercepted layer and added to the output. With alearn's DFA rule each
  intercepted layer's backward sends ``δ_L D`` to the layer's input: a receiver after the
  previous layer's activation that replaces the incoming gradient by ``D δ_L``.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from flax.core import meta

from alearn.layers.linear import apply_rule
from alearn.layers.tape import Tape
from alearn.rules.base import Rule
from alearn.rules.bp import BP
from alearn.wrappers.ops import EinsumOp, conv_op, dot_op

Array = jax.Array

SUPPORTED = "flax.linen.Dense, DenseGeneral, Conv, Einsum"


def path_matches(path: str, pattern: str) -> bool:
    """Glob match per path segment: ``*`` never crosses "/" (``"stage*_block*"`` matches
    ``stage1_block0`` but not its submodule ``stage1_block0/conv1``)."""
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(
        fnmatch.fnmatchcase(a, p) for a, p in zip(parts, pats))


def _path(module: nn.Module) -> str:
    return "/".join(str(p) for p in module.path)


class _Swap:
    """Temporarily replaces a frozen module's ``attr`` (and ``attr_cls``) for one call."""

    def __init__(self, module: nn.Module, attr: str, fn: Any):
        self.module, self.attr, self.fn = module, attr, fn

    def __enter__(self):
        self.saved = {a: getattr(self.module, a) for a in (self.attr, self.attr + "_cls")}
        object.__setattr__(self.module, self.attr, self.fn)
        object.__setattr__(self.module, self.attr + "_cls", None)

    def __exit__(self, *exc):
        for a, v in self.saved.items():
            object.__setattr__(self.module, a, v)


class _Interceptor:
    """Routes the supported layers of one model call through the tape's rule."""

    def __init__(self, tape: Tape, blocks: Sequence[str]):
        self.tape, self.blocks = tape, tuple(blocks)
        self.paths: list[str] = []
        self.layers: list[str] = []
        self.matched: set[str] = set()

    def __call__(self, next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = _path(module)
        self.paths.append(path)
        for pattern in self.blocks:
            if path_matches(path, pattern):
                self.matched.add(pattern)
                if args:
                    self.tape.block(args[0])
                break
        if isinstance(module, (nn.Dense, nn.DenseGeneral)):
            self.layers.append(path)
            with _Swap(module, "dot_general", self._dot(module)):
                return next_fun(*args, **kwargs)
        if isinstance(module, nn.Conv):
            self.layers.append(path)
            with _Swap(module, "conv_general_dilated", self._conv(module)):
                return next_fun(*args, **kwargs)
        if isinstance(module, nn.Einsum):
            self.layers.append(path)
            return self._einsum(module, *args, **kwargs)
        return next_fun(*args, **kwargs)

    def _dot(self, module):
        def dot_general(lhs, rhs, dimension_numbers, precision=None,
                        preferred_element_type=None):
            op = dot_op(lhs, rhs, dimension_numbers, precision, preferred_element_type)
            return apply_rule(module, op, lhs, rhs, self.tape)
        return dot_general

    def _conv(self, module):
        def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                 rhs_dilation=None, dimension_numbers=None,
                                 feature_group_count=1, batch_group_count=1, precision=None,
                                 preferred_element_type=None):
            op = conv_op(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                         dimension_numbers, feature_group_count, batch_group_count, precision,
                         preferred_element_type)
            return apply_rule(module, op, lhs, rhs, self.tape)
        return conv_general_dilated

    def _einsum(self, module: nn.Einsum, inputs: Array, einsum_str: str | None = None):
        """``flax.linen.Einsum.__call__`` with the einsum routed through the rule."""
        eq = nn.merge_param("einsum_str", module.einsum_str, einsum_str).replace(" ", "")
        if "->" not in eq or eq.count(",") != 1:
            raise ValueError(f"Einsum {_path(module)!r}: einsum_str {eq!r} must be explicit "
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
        y = apply_rule(module, op, inputs, kernel, self.tape)
        if bias is not None:
            y = y + bias.reshape(bcast)
        return y


def _call_kwargs(model: nn.Module, train: bool) -> dict:
    """``train=`` / ``deterministic=`` for a model whose ``__call__`` takes them."""
    params = inspect.signature(type(model).__call__).parameters
    if "train" in params:
        return {"train": train}
    if "deterministic" in params:
        return {"deterministic": not train}
    return {}


class Wrapped:
    """A plain Flax model whose linear layers learn by a rule (see module docstring).

    Used like a native alearn model: ``init(rngs, x, rule=..., train=False)`` and
    ``apply(variables, x, rule=..., train=..., mutable=...)``, hence by ``alearn.init``,
    ``alearn.rule_updates``, ``alearn.value_and_updates`` and the trainer. ``apply``
    without ``rule=`` runs BP only when there are no feedback weights; otherwise it raises.

    Attributes:
      model: the user's ``flax.linen.Module`` (unmodified).
      blocks: module-path glob patterns (``fnmatch`` per "/"-separated segment, e.g.
        ``"ResNetBlock_*"`` or ``"encoder/layer_*"``) whose modules' inputs start activation-sharing groups.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[str] = ()):
        if not isinstance(model, nn.Module):
            raise TypeError(f"alearn.wrap expects a flax.linen.Module, got {type(model).__name__}"
                            " (for flax.nnx models use alearn.wrap_nnx)")
        if isinstance(blocks, str):
            blocks = (blocks,)
        self.model, self.blocks = model, tuple(blocks)

    def __repr__(self) -> str:
        return f"alearn.wrap({type(self.model).__name__}, blocks={self.blocks})"

    def __hash__(self) -> int:
        return hash((self.model, self.blocks))

    def __eq__(self, other) -> bool:
        return isinstance(other, Wrapped) and (self.model, self.blocks) == (other.model,
                                                                           other.blocks)

    def _run(self, fn, first, args, kwargs, rule: Rule, initializing: bool):
        check_grouping(rule, self.blocks, f"alearn.wrap({type(self.model).__name__})")
        batch = jax.tree.leaves(args)[0].shape[0] if args else 1
        num_out = 1
        if rule.needs_carrier:
            if initializing:
                out = jax.eval_shape(
                    lambda: self.model.init_with_output(first, *args, **kwargs)[0])
            else:
                out = jax.eval_shape(lambda: fn(first, *args, **kwargs))
                out = out[0] if kwargs.get("mutable") else out
            if not isinstance(out, jax.ShapeDtypeStruct) or len(out.shape) < 1:
                raise ValueError(
                    f"rule {rule.name!r} adds its carrier to the model output, so "
                    f"{type(self.model).__name__} must return one array (batch, ...), got "
                    f"{jax.tree.map(lambda a: a.shape, out)}")
            num_out = math.prod(out.shape[1:])
        tape = Tape(rule, batch, num_out)
        spy = _Interceptor(tape, self.blocks)
        with nn.intercept_methods(spy):
            result = fn(first, *args, **kwargs)
        self._check(spy, initializing)
        if initializing:  # nothing is differentiated at init: no carrier to close
            tape.finished = True
            return result
        out, state = result if kwargs.get("mutable") else (result, None)
        if isinstance(out, jax.Array) and out.ndim >= 1:
            flat = tape.finish(out.reshape(out.shape[0], -1))
            out = flat.reshape(out.shape)
        else:
            tape.finished = True
        return (out, state) if kwargs.get("mutable") else out

    def _check(self, spy: _Interceptor, initializing: bool) -> None:
        name = type(self.model).__name__
        if not spy.layers:
            raise ValueError(
                f"alearn.wrap({name}): no supported layer ({SUPPORTED}) was called; modules "
                f"called: {spy.paths or 'none'}. Nothing would learn by the rule.")
        if initializing:
            missing = [p for p in self.blocks if p not in spy.matched]
            if missing:
                raise ValueError(
                    f"alearn.wrap({name}, blocks=...): pattern(s) {missing} match no module "
                    f"path; the model calls: {sorted(set(spy.paths))}")

    def init(self, rngs: Any, *args: Any, rule: Rule = BP(), train: bool = False,
             **kwargs: Any) -> dict:
        """``model.init`` with the rule's feedback variables created at every layer."""
        if not isinstance(rngs, dict):
            rngs = {"params": rngs}
        kwargs = {**_call_kwargs(self.model, train), **kwargs}
        return self._run(self.model.init, rngs, args, kwargs, rule, initializing=True)

    def apply(self, variables: dict, *args: Any, rule: Rule | None = None,
              train: bool = False, **kwargs: Any) -> Any:
        """``model.apply`` with the linear layers' backward passes given by ``rule``."""
        if rule is None:
            if "feedback" in variables:
                raise ValueError(
                    f"alearn.wrap({type(self.model).__name__}).apply got feedback weights but "
                    "no rule: pass rule=<the rule the variables were initialised for>")
            rule = BP()
        kwargs = {**_call_kwargs(self.model, train), **kwargs}
        return self._run(self.model.apply, variables, args, kwargs, rule, initializing=False)


def check_grouping(rule: Rule, blocks: Sequence[str], where: str) -> None:
    """Rejects the authors'-code sharing grouping on a wrapped residual net.

    That grouping tells a block's conv1 and projection (which read the block input) from
    its conv2 by the identity of their input array; through the interceptor this is not
    matched to the native ResNets yet (stride-2 stages differ: tests/test_wrap.py), so it
    raises instead of training another grouping silently.
    """
    if blocks and getattr(rule, "grouping", None) == "authors_code":
        raise ValueError(
            f"{where}, blocks={tuple(blocks)}: rule {rule.name!r} with grouping='authors_code' "
            "needs the native model's layer roles (conv1/projection vs conv2), which the "
            "wrapper does not reproduce; pass grouping='block_input' (every layer of a block "
            "uses the block input) or use alearn's native ResNet")


def wrap(model: nn.Module, *, blocks: Sequence[str] = ()) -> Wrapped:
    """Wraps an unmodified ``flax.linen`` model so that any alearn rule trains it.

    Every ``flax.linen.Dense``, ``DenseGeneral``, ``Conv`` and ``Einsum`` the model calls
    learns by the rule given to ``init``/``apply`` (see :class:`Wrapped`). ``blocks`` are
    module-path patterns marking block inputs for the activation-sharing rules (AS, ASAP,
    ASFP); without them groups follow layer order. Wrapping a model without any supported
    layer, or with a pattern that matches no module, fails at init.
    """
    return Wrapped(model, blocks)
