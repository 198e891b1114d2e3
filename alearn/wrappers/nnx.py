"""``alearn.wrap_nnx``: ``flax.nnx`` models trained by any learning rule.

Every routed layer (:data:`SUPPORTED_NNX`: ``nnx.Linear``, ``LinearGeneral``, ``Einsum``,
``Conv``, ``ConvTranspose``, ``Embed.attend``; hence ``nnx.MultiHeadAttention`` and the
``nnx.nn.recurrent`` cells, which are built from them) is switched (once, at wrap time) to
a subclass whose call routes the layer's product through the rule's custom VJP
(:mod:`alearn.wrappers._nnx_layers`); all of NNX's own logic (dtype promotion, padding,
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

Several inputs: ``wrap_nnx(model, rule, (tokens, lengths), key)`` and
``nnx_value_and_updates(loss_fn, model, tokens, lengths, targets=y)``; a model returning
``(logits, aux)``: ``wrap_nnx(..., output=0)``.

A user's ``nnx.scan`` / ``nnx.vmap`` over stacked blocks must map :class:`Feedback` like
``nnx.Param`` (``nnx.StateAxes({(nnx.Param, alearn.Feedback): 0, ...: None})``); one that
does not raises a ValueError naming that fix, at wrap time (a last trace with the Feedback
variables in place). The per-call :class:`~alearn._layers.Tape` reaches the layers through
a context variable set only during the wrapper's call: a routed layer called outside it
raises instead of silently running backprop.

DFA (as in :mod:`alearn.wrappers.linen`): :func:`nnx_value_and_updates` computes δ_L by a
first forward pass (on a clone: no state moves) and hands it to every layer, so layers in
``nnx.scan`` bodies work (``wrapped(x, output_error=e)`` by hand). Each layer sends
``δ_L D`` to its input; where one array feeds several layers (q/k/v) only the first owns
D, and a layer handed a model input (the very array the wrapper was called with) owns none
(the input's gradient is discarded). ``blocks=`` puts a receiver (Feedback ``D`` on the
matched module) at a module's input, ``receivers=`` on its output (``D_out``); a receiver
replaces all the gradient arriving there by ``δ_L D`` and a layer reading its output owns
no D. At wrap time a layer whose output reaches several receiving points through
non-layer ops (a residual shortcut) is refused, naming the pattern to pass
(``dfa_shortcuts="allow"`` sums the signals; as in Linen, leaving an ``nnx.scan`` body
counts as one receiving point, so a shortcut across scanned blocks is not seen: put
``blocks=`` on the scanned block yourself). A
post-LN block (MiniGPT: ``LN(x + mha(x))``, ``LN(h + linear2(relu(linear1(h))))``) needs
``receivers=("transformer_blocks/*/mha", "transformer_blocks/*/linear2")``: its FFN is
no module, so the receiver goes on its last Linear.

No silent BP: at wrap time (every rule but BP) each ``nnx.Param`` must be the kernel of a
routed layer, element-wise (biases, norm scales/biases, ``nnx.Embed`` tables) or listed
in ``exclude=``; anything else raises, naming the parameter path.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from alearn._layers.tape import Tape
from alearn.rules.base import Rule
from alearn.rules.bp import BP
from alearn.wrappers._match import path_matches
from alearn.wrappers._nnx_call import (ID, PATH, RID, TAPE, Call, Feedback, Recorder,
                                       no_axis_error, replicated)
from alearn.wrappers._nnx_dfa import (batch_of, check_trace, draw_layers, draw_receivers,
                                      marked)
from alearn.wrappers._nnx_layers import (ROUTED, SUPPORTED_NNX, RuleConv,
                                         RuleConvTranspose, RuleEinsum, RuleEmbed, RuleLinear,
                                         RuleLinearGeneral, check_coverage, routed_base)
from alearn.wrappers._output import get_output, set_output

Array = jax.Array

__all__ = ["Feedback", "RuleConv", "RuleConvTranspose", "RuleEinsum", "RuleEmbed",
           "RuleLinear", "RuleLinearGeneral", "SUPPORTED_NNX", "WrappedNNX", "wrap_nnx"]


def _path(path: tuple) -> str:
    return "/".join(str(k) for k in path)


def _as_tuple(v: Any) -> tuple:
    return (v,) if isinstance(v, str) else tuple(v)


class WrappedNNX(nnx.Module):
    """An NNX model whose supported layers learn by ``rule`` (see module docstring)."""

    def __init__(self, model: nnx.Module, rule: Rule, sample_x: Any, key: Array,
                 blocks: Sequence[str] = (), exclude: Sequence[str] = (),
                 receivers: Sequence[str] = (), output: Any = None,
                 dfa_shortcuts: str = "error"):
        if not isinstance(model, nnx.Module):
            raise TypeError(f"alearn.wrap_nnx expects a flax.nnx.Module, got "
                            f"{type(model).__name__} (for Linen models use alearn.wrap)")
        if dfa_shortcuts not in ("error", "allow"):
            raise ValueError(f"alearn.wrap_nnx: dfa_shortcuts={dfa_shortcuts!r}; choose "
                             "'error' (refuse a model whose layers' outputs reach two "
                             "receiving points) or 'allow' (sum their feedback signals)")
        name = f"alearn.wrap_nnx({type(model).__name__})"
        inputs = tuple(sample_x) if isinstance(sample_x, (tuple, list)) else (sample_x,)
        blocks, receivers = _as_tuple(blocks), _as_tuple(receivers)
        exclude = _as_tuple(exclude)
        layers, receiving = self._switch(model, blocks, receivers, name)
        if rule.name != "bp":
            check_coverage(model, exclude, rule, name)
        self.model, self.rule = model, rule
        self.blocks, self.receivers, self.exclude = blocks, receivers, exclude
        self.output, self.dfa_shortcuts = output, dfa_shortcuts
        # the selected output: one array for rules driven by it (DFA's δ_L, on_finish)
        strict = rule.needs_carrier or type(rule).on_finish is not Rule.on_finish
        self.out_shape, self.out_dtype = self._record(BP(), inputs, {}, {}, strict)
        records: dict = {}
        received: dict = {}
        if rule.name != "bp":
            self._record(rule, inputs, records, received, strict)
        shape = self.out_shape or (1,)
        tape = Tape(rule, batch_of(inputs), math.prod(shape), out_shape=shape)
        draw_layers(rule, records, layers, tape, key)
        draw_receivers(rule, tape, received, receiving, key, len(layers))
        tape.finished = True
        if rule.name != "bp" and (received or any(r[3] for r in records.values())):
            check_trace(model, rule, inputs, shape, output, name,
                        shortcuts=rule.receives and dfa_shortcuts == "error")

    @property
    def name(self) -> str:
        return f"alearn.wrap_nnx({type(self.model).__name__})"

    @staticmethod
    def _switch(model: nnx.Module, blocks: tuple, receivers: tuple, name: str
                ) -> tuple[list, list]:
        """Switches routed layers and blocks=/receivers= modules to their subclasses (in
        place); returns [(path, routed layer)] and [receiving module] in graph order."""
        layers: list[tuple[str, nnx.Module]] = []
        receiving: list[nnx.Module] = []
        paths, matched = [], set()
        for path, node in nnx.iter_graph(model):
            if not isinstance(node, nnx.Module):
                continue
            p = _path(path)
            if type(node) in ROUTED:
                node.__class__ = ROUTED[type(node)]
            if routed_base(type(node)) is not None:
                object.__setattr__(node, ID, len(layers))
                object.__setattr__(node, PATH, p)
                layers.append((p, node))
            if node is model:
                continue
            paths.append(p)
            block = [pat for pat in blocks if path_matches(p, pat)]
            out = [pat for pat in receivers if path_matches(p, pat)]
            if block or out:
                matched.update(block + out)
                node.__class__ = marked(type(node), bool(block), bool(out))
                object.__setattr__(node, RID, len(receiving))
                object.__setattr__(node, PATH, p)
                receiving.append(node)
        if not layers:
            raise ValueError(f"{name}: no supported layer ({SUPPORTED_NNX}) found; "
                             f"submodules: {paths or 'none'}. Nothing would learn by the rule.")
        if missing := [p for p in blocks + receivers if p not in matched]:
            raise ValueError(f"{name}, blocks/receivers=...: pattern(s) {missing} match no "
                             f"module path; the model has: {paths}")
        return layers, receiving

    def _record(self, rule: Rule, inputs: tuple, records: dict, received: dict,
                strict: bool = True) -> tuple[tuple[int, ...] | None, Any]:
        """(shape without batch, dtype) of the selected output (abstract pass, nothing
        moves; ``(None, None)`` for an output that is not one array, unless ``strict``);
        fills ``records`` / ``received`` with what each routed layer / receiver needs
        under ``rule``."""
        graphdef, state = nnx.split(self.model)
        batch = batch_of(inputs)
        out_shape = getattr(self, "out_shape", None) or (1,)
        error = jnp.zeros((batch, *out_shape)) if rule.needs_carrier else None

        def run(st):
            tape = Tape(rule, batch, math.prod(out_shape), out_shape=out_shape, error=error)
            token = TAPE.set(Recorder(tape, records, received, inputs))
            try:
                return nnx.merge(graphdef, st)(*inputs)
            finally:
                TAPE.reset(token)

        out = jax.eval_shape(run, state)
        sel = get_output(out, self.output, self.name)
        if not isinstance(sel, jax.ShapeDtypeStruct) or not sel.shape:
            if not strict and self.output is None:
                return None, None
            raise ValueError(
                f"{self.name}: the (selected) model output must be one array (batch, ...), "
                f"got {jax.tree.map(lambda a: a.shape, out)}; for models returning "
                "(logits, aux) pass alearn.wrap_nnx(..., output=0)")
        return tuple(sel.shape[1:]), sel.dtype

    def zeros_error(self, inputs: tuple) -> Array:
        """Zeros of the selected output's shape (δ_L of a pass whose backward is unused)."""
        return jnp.zeros((batch_of(inputs), *self.out_shape), self.out_dtype)

    def __call__(self, *inputs: Any, output_error: Array | None = None, **kwargs: Any) -> Any:
        """The model's output; its backward pass follows the wrapper's rule.

        ``output_error``: δ_L (shape of the selected output) for rules that need it (DFA);
        given, it reaches every layer directly (works inside ``nnx.scan``); omitted, it
        arrives as the cotangent of a carrier added to the output.
        """
        rule, shape = self.rule, self.out_shape or (1,)
        batch = batch_of(inputs)
        error = output_error if rule.needs_carrier else None
        if error is not None:
            error = replicated(error)
        if error is not None and tuple(error.shape) != (batch, *shape):
            raise ValueError(f"output_error has shape {error.shape}, the output is "
                             f"{(batch, *shape)}")
        tape = Tape(rule, batch, math.prod(shape), out_shape=shape, error=error)
        token = TAPE.set(Call(tape, inputs=inputs))
        try:
            out = self.model(*inputs, **kwargs)
        except jax.errors.UnexpectedTracerError as exc:
            if rule.needs_carrier and error is None:
                raise ValueError(
                    f"rule {rule.name!r} was applied without output_error= to a model with "
                    "layers inside a lifted transform (nnx.scan, nnx.vmap, ...): use "
                    "alearn.nnx_value_and_updates (it gives δ_L up front) or pass "
                    "output_error=") from exc
            raise
        except ValueError as exc:
            clear = no_axis_error(exc)
            if clear is not None:
                raise clear from exc
            raise
        finally:
            TAPE.reset(token)
        if self.out_shape is None:  # a rule not driven by the output (FA, KP, ...)
            tape.close(type(self.model).__name__)
            return out
        sel = get_output(out, self.output, self.name)
        if tuple(sel.shape[1:]) != self.out_shape:
            raise ValueError(f"output shape {sel.shape}: the wrapper was built for outputs "
                             f"(batch, {', '.join(map(str, self.out_shape))})")
        if tape.carrier is None and type(rule).on_finish is Rule.on_finish:
            tape.close(type(self.model).__name__)  # nothing to add: no reshape (keeps
            return out  # explicit shardings)
        flat = tape.finish(sel.reshape(sel.shape[0], -1)).reshape(sel.shape)
        return set_output(out, self.output, flat)


def wrap_nnx(model: nnx.Module, rule: Rule, sample_x: Any, key: Array, *,
             blocks: Sequence[str] = (), exclude: Sequence[str] = (),
             receivers: Sequence[str] = (), output: Any = None,
             dfa_shortcuts: str = "error") -> WrappedNNX:
    """Routes every supported layer of ``model`` (in place, :data:`SUPPORTED_NNX`) through
    ``rule``; returns the wrapper, an ``nnx.Module`` called like the model.

    ``sample_x``: a sample input, or a tuple/list of the model's positional inputs (a
    model taking one tuple: ``((a, b),)``). An abstract pass on it records each layer's
    operator; the :class:`Feedback` variables are then drawn from ``key`` (folded with the
    layer / receiver number). ``blocks``: module-path patterns ("/"-separated, fnmatch per
    segment, e.g. ``"blocks/*"``) whose first input starts an activation-sharing group and,
    for DFA, gets a receiver (Feedback ``D`` on that module). ``receivers``: patterns of
    modules whose output gets a DFA receiver (Feedback ``D_out``; e.g. attention and FFN
    sub-blocks writing into a residual stream). ``exclude``: parameter or module-path
    patterns allowed to stay on exact BP (otherwise any ``nnx.Param`` that is not a routed
    kernel or element-wise raises). ``output``: the part of a tuple/dict output the rule is
    driven by (``output=0`` for ``(logits, aux)``). ``dfa_shortcuts``: "error" (default)
    refuses DFA where a layer's output reaches several receiving points (a residual
    shortcut without a receiver), naming the ``blocks=`` / ``receivers=`` fix; "allow" sums
    their signals.
    """
    return WrappedNNX(model, rule, sample_x, key, blocks, exclude, receivers, output,
                      dfa_shortcuts)
