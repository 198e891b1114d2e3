"""``alearn.wrap``: any unmodified ``flax.linen`` model trained by any learning rule.

The wrapper runs the user's model under ``flax.linen.intercept_methods``; every linear map
the model applies (see :data:`SUPPORTED` and :mod:`alearn.wrappers._intercept`) is routed
through the rule's custom VJP. The model's code is never touched and
``variables["params"]`` has exactly the tree of ``model.init`` (pretrained weights load
as-is); feedback weights live in ``variables["feedback"]`` at the path of the layer they
serve, stacked like its parameters under ``nn.scan``.

What the wrapper adds around the model (the native models do this by hand):

- a :class:`~alearn._layers.Tape` per call, so layer order drives the activation-sharing
  groups; ``blocks=`` patterns mark block inputs (``tape.block``);
- DFA (ASAP thesis eq. 2.5): the output error δ_L reaches every layer. Each layer sends
  ``δ_L D`` to its input instead of ``Wᵀδ``; where one array feeds several layers (q/k/v
  of attention, LSTM gates, conv1 and the projection of a residual block) only the first
  sends it. At the input of every module matched by ``blocks=`` (or ``receivers=``) a
  receiver replaces *all* the gradient arriving there by ``δ_L D``, so nothing passes a
  residual shortcut. A model where a layer's input also reaches the output or another
  layer some other way (a shortcut) without such a receiver is refused at init, with the
  pattern to pass. :func:`alearn.value_and_updates` gives δ_L up front (a first forward
  pass, which XLA merges with the second), so this works inside ``nn.scan`` bodies; the
  carrier form (a zero array added to the output) serves a plain ``jax.grad`` of
  ``apply``. Outputs with position axes (batch, T, V) get one D per layer shared over
  positions (``DFA(sequence="flatten")`` for the flattened form);
- coverage: at init, for every rule but BP, the traced model is checked for parameters
  that would still receive their exact BP gradient — a parameter multiplied into data by
  a map the wrapper does not route. Each is an error naming its path, unless listed in
  ``exclude=``. Element-wise parameters (biases, norm scales, embedding tables, position
  embeddings) take the local error that reaches them, as the rules prescribe.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alearn._layers.tape import Tape, needs_finish
from alearn.rules.base import Rule
from alearn.rules.bp import BP
from alearn.wrappers import _coverage
from alearn.wrappers._intercept import FB_PREFIX, SUPPORTED, Interceptor
from alearn.wrappers._match import path_matches
from alearn.wrappers._output import get_output, set_output

Array = jax.Array

__all__ = ["SUPPORTED", "Wrapped", "path_matches", "wrap"]


def _call_kwargs(model: nn.Module, train: bool) -> dict:
    """``train=`` / ``deterministic=`` for a model whose ``__call__`` takes them."""
    params = inspect.signature(type(model).__call__).parameters
    if "train" in params:
        return {"train": train}
    if "deterministic" in params:
        return {"deterministic": not train}
    return {}


def split_feedback(tree: Any) -> tuple[Any, Any]:
    """(params without feedback leaves, feedback tree) from a params tree holding both."""
    if not isinstance(tree, dict) and not hasattr(tree, "items"):
        return tree, None
    params, feedback = {}, {}
    for k, v in tree.items():
        if isinstance(k, str) and k.startswith(FB_PREFIX):
            feedback[k[len(FB_PREFIX):]] = v
            continue
        p, f = split_feedback(v)
        params[k] = p
        if f:
            feedback[k] = f
    return params, feedback


def merge_feedback(params: Any, feedback: Any) -> Any:
    """The inverse of :func:`split_feedback`."""
    if not feedback:
        return params
    out = dict(params)
    for k, v in feedback.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out[k] = merge_feedback(params.get(k, {}), v)
        else:
            out[FB_PREFIX + k] = v
    return out


class Wrapped:
    """A plain Flax model whose linear maps learn by a rule (see module docstring).

    Used like a native alearn model: ``init(rngs, *inputs, rule=..., train=False)`` and
    ``apply(variables, *inputs, rule=..., train=..., mutable=...)``, hence by
    ``alearn.init``, ``alearn.value_and_updates``, ``alearn.describe`` and the trainer.
    ``apply`` without ``rule=`` runs BP only when there are no feedback weights.

    Attributes:
      model: the user's ``flax.linen.Module`` (unmodified).
      blocks: module-path glob patterns (``fnmatch`` per "/"-separated segment, e.g.
        ``"ResNetBlock_*"`` or ``"encoder/layer_*"``) of residual blocks: their inputs
        start activation-sharing groups and, for DFA, get a receiver.
      receivers: further patterns whose modules' inputs get a DFA receiver only.
      exclude: parameter or module-path patterns that may keep their exact BP gradient
        under a feedback rule (e.g. a custom projection you mean to train by BP).
      output: which part of the model's output is *the* output the rule is driven by,
        for models returning ``(logits, aux)``: an index, a key, or a tuple of them.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[str] = (),
                 receivers: Sequence[str] = (), exclude: Sequence[str] = (),
                 output: Any = None, dfa_shortcuts: str = "error", check: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"alearn.wrap expects a flax.linen.Module, got {type(model).__name__}"
                            " (for flax.nnx models use alearn.wrap_nnx)")
        as_tuple = lambda v: (v,) if isinstance(v, str) else tuple(v)  # noqa: E731
        self.model = model
        self.blocks, self.receivers = as_tuple(blocks), as_tuple(receivers)
        self.exclude = as_tuple(exclude)
        self.output = output
        if dfa_shortcuts not in ("error", "allow"):
            raise ValueError(f"alearn.wrap: dfa_shortcuts={dfa_shortcuts!r}; choose 'error' "
                             "(refuse a model whose layers' outputs reach two receiving "
                             "points) or 'allow' (sum their feedback signals)")
        self.dfa_shortcuts = dfa_shortcuts
        # the init-time trace checks (coverage, DFA shortcuts); alearn.models.create turns
        # them off for the paper models, which tests/test_models.py checks once per rule
        self.check = bool(check)
        self.last_layers: list = []  # records of the latest traced call (for describe)

    def __getattr__(self, name: str) -> Any:
        """The wrapped module's fields (``create("resnet18", 10).stage_sizes``)."""
        model = self.__dict__.get("model")
        if name.startswith("_") or model is None:
            raise AttributeError(name)
        try:
            return getattr(model, name)
        except AttributeError:
            raise AttributeError(f"{type(self).__name__} of {type(model).__name__} has no "
                                 f"attribute {name!r}") from None

    def _key(self):
        return (self.model, self.blocks, self.receivers, self.exclude, self.output,
                self.dfa_shortcuts, self.check)

    def __repr__(self) -> str:
        return (f"alearn.wrap({type(self.model).__name__}, blocks={self.blocks}, "
                f"receivers={self.receivers}, exclude={self.exclude}, output={self.output!r})")

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other) -> bool:
        return isinstance(other, Wrapped) and self._key() == other._key()

    @property
    def name(self) -> str:
        return f"alearn.wrap({type(self.model).__name__})"

    def _out_shape(self, fn, first, args, kwargs) -> tuple[int, ...]:
        out = jax.eval_shape(lambda: fn(first, *args, **kwargs))
        out = out[0] if kwargs.get("mutable") else out
        sel = get_output(out, self.output, self.name)
        if not isinstance(sel, jax.ShapeDtypeStruct) or len(sel.shape) < 1:
            raise ValueError(
                f"{self.name}: rule needs the output error, so the selected model output must "
                f"be one array (batch, ...), got {jax.tree.map(lambda a: a.shape, sel)}; for "
                "models returning (logits, aux) pass alearn.wrap(model, output=0)")
        return tuple(sel.shape[1:])

    def _run(self, fn, first, args, kwargs, rule: Rule, initializing: bool,
             output_error: Array | None = None):
        leaves = [a for a in jax.tree.leaves(args) if hasattr(a, "shape") and a.ndim]
        batch = leaves[0].shape[0] if leaves else 1
        out_shape = (1,)
        if needs_finish(rule):  # δ_L, or heads sized to the output (local rules, ASFP+LC)
            plain = (lambda *a, **k: self.model.init_with_output(*a, **k)[0]) if initializing \
                else fn
            out_shape = self._out_shape(plain, first, args, kwargs)
        if output_error is not None and tuple(output_error.shape) != (batch, *out_shape):
            raise ValueError(f"{self.name}: output_error has shape {output_error.shape}, the "
                             f"output is {(batch, *out_shape)}")
        error = output_error if rule.needs_carrier else None
        if initializing and rule.needs_carrier:  # nothing is differentiated at init
            error = jnp.zeros((batch, *out_shape))
        tape = Tape(rule, batch, math.prod(out_shape), out_shape=out_shape, error=error)
        spy = Interceptor(tape, self.blocks, self.receivers, inputs=jax.tree.leaves(args))
        try:
            with nn.intercept_methods(spy):
                result = fn(first, *args, **kwargs)
            self._check(spy, initializing)
            self.last_layers = spy.layers
            return self._close(tape, result, kwargs, initializing)
        except flax.errors.ScopeParamNotFoundError as exc:
            self._sharing_order(rule, exc)
            raise
        except jax.errors.UnexpectedTracerError as exc:
            if rule.needs_carrier and error is None:
                raise ValueError(
                    f"{self.name}: rule {rule.name!r} was applied without output_error= to a "
                    "model with layers inside a lifted transform (nn.scan, nn.vmap, ...); use "
                    "alearn.value_and_updates (it gives δ_L up front) or pass output_error="
                ) from exc
            raise

    def _sharing_order(self, rule: Rule, exc: Exception) -> None:
        if hasattr(rule, "grouping"):
            raise ValueError(
                f"{self.name}: rule {rule.name!r} numbers layers in forward order to "
                "form its sharing groups, and this model's layer order is not the same "
                "on every trace (layers inside nn.RNN / nn.scan over time steps); "
                "activation sharing across a recurrence is not supported: use fa, kp, "
                "sign or dfa for this model") from exc

    def _close(self, tape: Tape, result: Any, kwargs: dict, initializing: bool) -> Any:
        """Closes the tape on the selected output: DFA's carrier receives δ_L there, and a
        rule's ``on_finish`` (local heads, ASFP+LC's classifiers) ties its errors to it."""
        if initializing or not needs_finish(tape.rule):
            tape.close(type(self.model).__name__)
            return result
        out, state = result if kwargs.get("mutable") else (result, None)
        sel = get_output(out, self.output, self.name)
        tape.model_name = type(self.model).__name__
        flat = tape.finish(sel.reshape(sel.shape[0], -1)).reshape(sel.shape)
        out = set_output(out, self.output, flat)
        return (out, state) if kwargs.get("mutable") else out

    def tagged_apply(self, variables: dict, args: tuple, rule: Rule, kwargs: dict,
                     layers: list) -> Any:
        """The model's selected output with every map and receiver as a named jit (for
        :func:`alearn.wrappers._coverage.check`); appends the layer records to ``layers``."""
        merged = {k: v for k, v in variables.items() if k != "feedback"}
        if "feedback" in variables:
            merged["params"] = merge_feedback(variables["params"], variables["feedback"])
        batch = jax.tree.leaves(args)[0].shape[0]
        out_shape = (self._out_shape(self.model.apply, merged, args, kwargs)
                     if needs_finish(rule) else (1,))
        tape = Tape(rule, batch, math.prod(out_shape), out_shape=out_shape,
                    error=jnp.zeros((batch, *out_shape)) if rule.needs_carrier else None)
        spy = Interceptor(tape, self.blocks, self.receivers, tag=True,
                          inputs=jax.tree.leaves(args))
        try:
            with nn.intercept_methods(spy):
                out = self.model.apply(merged, *args, **kwargs)
        except flax.errors.ScopeParamNotFoundError as exc:
            self._sharing_order(rule, exc)
            raise
        tape.finished = True  # δ_L is given: no carrier to close
        layers.extend(spy.layers)
        self.last_layers = spy.layers
        return get_output(out, self.output, self.name)

    def _check(self, spy: Interceptor, initializing: bool) -> None:
        if not spy.layers:
            raise ValueError(
                f"{self.name}: no supported layer ({SUPPORTED}) was called; modules "
                f"called: {spy.paths or 'none'}. Nothing would learn by the rule.")
        if initializing:
            missing = [p for p in self.blocks + self.receivers if p not in spy.matched]
            if missing:
                raise ValueError(
                    f"{self.name}, blocks/receivers=...: pattern(s) {missing} match no "
                    f"module path; the model calls: {sorted(set(spy.paths))}")

    def init(self, rngs: Any, *args: Any, rule: Rule = BP(), train: bool = False,
             **kwargs: Any) -> dict:
        """``model.init`` with the rule's feedback variables created at every layer.

        For every rule but BP the traced model is then checked (uncovered linear maps,
        DFA shortcuts; see the module docstring); the errors name the module path.
        """
        if not isinstance(rngs, dict):
            rngs = {"params": rngs}
        kwargs = {**_call_kwargs(self.model, train), **kwargs}

        def run(rngs_, args_):
            return self._run(self.model.init, rngs_, args_, kwargs, rule, initializing=True)

        # Traced, as every later apply is: "the same array" (which layer owns DFA's D) is
        # judged on traced values; eagerly, e.g. lax.stop_gradient(x) is x would hold.
        if all(isinstance(a, (jax.Array, np.ndarray)) for a in jax.tree.leaves(args)):
            variables = dict(jax.jit(run)(rngs, args))
        else:
            variables = dict(run(rngs, args))
        params, feedback = split_feedback(variables.get("params", {}))
        variables["params"] = params
        if feedback:
            variables["feedback"] = feedback
        if rule.name != "bp" and self.check:
            _coverage.check(self, rule, variables, args, kwargs)
        return variables

    def apply(self, variables: dict, *args: Any, rule: Rule | None = None,
              train: bool = False, output_error: Array | None = None, **kwargs: Any) -> Any:
        """``model.apply`` with the linear maps' backward passes given by ``rule``.

        ``output_error``: δ_L (shape of the selected output) for rules that need it; given,
        it reaches every layer directly (works inside lifted transforms); omitted, it
        arrives as the cotangent of a carrier added to the output.
        """
        if rule is None:
            if "feedback" in variables:
                raise ValueError(
                    f"{self.name}.apply got feedback weights but no rule: pass rule=<the rule "
                    "the variables were initialised for>")
            rule = BP()
        kwargs = {**_call_kwargs(self.model, train), **kwargs}
        merged = {k: v for k, v in variables.items() if k != "feedback"}
        if "feedback" in variables:  # (rules without feedback names may hold markers)
            merged["params"] = merge_feedback(variables["params"], variables["feedback"])
        result = self._run(self.model.apply, merged, args, kwargs, rule,
                           initializing=False, output_error=output_error)
        if kwargs.get("mutable") and "params" in result[1]:
            state = dict(result[1])
            state["params"], fb = split_feedback(state["params"])
            if fb:
                state["feedback"] = fb
            result = (result[0], state)
        return result


def wrap(model: nn.Module, *, blocks: Sequence[str] = (), receivers: Sequence[str] = (),
         exclude: Sequence[str] = (), output: Any = None,
         dfa_shortcuts: str = "error") -> Wrapped:
    """Wraps an unmodified ``flax.linen`` model so that any alearn rule trains it.

    Every linear map the model applies (:data:`SUPPORTED`) learns by the rule given to
    ``init``/``apply`` (see :class:`Wrapped`). ``blocks``: module-path patterns of
    residual blocks (activation-sharing groups; DFA receivers at their inputs).
    ``receivers``: patterns of further DFA receiving points. ``exclude``: parameters that
    may train by exact BP under another rule. ``output``: the output the rule is driven by
    when the model returns a tuple/dict (e.g. ``output=0`` for ``(logits, aux)``).
    ``dfa_shortcuts``: "error" (default) refuses DFA where a layer's output reaches two
    receiving points (see the module docstring); "allow" sums their signals.
    Wrapping a model without any supported layer, a pattern that matches no module, or a
    parameter the rule would silently leave on BP fails at init.
    """
    return Wrapped(model, blocks, receivers, exclude, output, dfa_shortcuts)
