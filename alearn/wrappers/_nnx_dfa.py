"""``wrap_nnx``'s receiving points (``blocks=`` / ``receivers=``), the draws of every
Feedback variable, and the wrap-time check trace (DFA shortcuts, StateAxes that forget
:class:`Feedback`).

A module matched by ``blocks=`` is switched to a subclass that marks its first input as a
block input (``tape.block``) and, for rules that receive (DFA), replaces it by a receiver's
output (its Feedback ``D`` on that module); one matched by ``receivers=`` puts a receiver
on its output (Feedback ``D_out``). A routed layer whose input is a receiver's output owns
no D (``tape.input_received``), as in the Linen wrapper.
"""

from __future__ import annotations

import inspect
import math
import types
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from alearn._layers.receiver import run_receiver
from alearn._layers.tape import Tape
from alearn.wrappers import _coverage
from alearn.wrappers._nnx_call import (PATH, RECEIVER_VARS, SHAPES, TAPE, Call, Feedback,
                                       Recorder, explicit, no_axis_error,
                                       read_feedback, replicated)
from alearn.wrappers._nnx_layers import KERNEL, routed_base
from alearn.wrappers._output import get_output

Array = jax.Array

_MARKED: dict[tuple, type] = {}


def receive(module: nnx.Module, call: Call, h: Array, where: str) -> Array:
    """A receiving point on ``h`` owned by ``module`` (``where``: "D" at its input,
    "D_out" at its output)."""
    tape, rule = call.tape, call.tape.rule
    names = tuple(rule.receiver_feedback_names)
    if isinstance(call, Recorder):
        feedback = call.record_receiver(module, where, h)
    else:
        feedback = read_feedback(module, names, rule, stored_names(names, where))
    if call.tagged is not None:
        out = call.tag_receiver(h, feedback)
    elif explicit(h):  # explicit sharding: as the routed layers, on replicated operands
        spec = jax.typeof(h).sharding.spec
        out = run_receiver(tape, replicated(h), {k: replicated(v) for k, v in feedback.items()})
        out = jax.sharding.reshard(out, spec)
    else:
        out = run_receiver(tape, h, feedback)
    call.received.append((out, getattr(module, PATH, "")))
    return out


def stored_names(names: Sequence[str], where: str) -> tuple[str, ...]:
    return tuple(n if where == "D" else f"{n}_out" for n in names)


def marked(cls: type, block: bool, out: bool) -> type:
    """A subclass of ``cls``: ``block``: its first input is a block input (and, for rules
    that receive, a receiver's output); ``out``: a receiver on its output."""
    key = (cls, block, out)
    if key in _MARKED:
        return _MARKED[key]
    params = list(inspect.signature(cls.__call__).parameters)
    first = params[1] if len(params) > 1 else None

    def __call__(self, *args, **kwargs):  # pylint: disable=invalid-name
        call = TAPE.get()
        if call is not None and block:
            x = args[0] if args else kwargs.get(first)
            if isinstance(x, jax.Array):
                call.tape.block(x)
                if call.tape.rule.receives:
                    x = receive(self, call, x, "D")
                    if args:
                        args = (x,) + tuple(args[1:])
                    else:
                        kwargs = {**kwargs, first: x}
        y = cls.__call__(self, *args, **kwargs)
        if call is not None and out and call.tape.rule.receives:
            if not isinstance(y, jax.Array):
                raise ValueError(
                    f"alearn.wrap_nnx(..., receivers=): module {getattr(self, PATH, '')!r} "
                    f"returns {type(y).__name__}, not one array; match a module that does")
            y = receive(self, call, y, "D_out")
        return y

    prefix = ("Block" if block else "") + ("Receiving" if out else "")
    _MARKED[key] = type(f"{prefix}{cls.__name__}", (cls,), {"__call__": __call__})
    return _MARKED[key]


def add_static(module: nnx.Module, attr: str, items: tuple) -> None:
    object.__setattr__(module, attr, tuple(getattr(module, attr, ())) + tuple(items))


def stacked(draw: Callable[[Array], Array], key: Array, prefix: tuple) -> Array:
    """``draw(key)``, or one independent draw per slice of a stacked (nnx.vmap-built)
    module with leading axes ``prefix``."""
    if not prefix:
        return draw(key)
    keys = jax.random.split(key, math.prod(prefix)).reshape(prefix)
    for _ in prefix:
        draw = jax.vmap(draw)
    return draw(keys)


def _meta(var: nnx.Variable) -> dict:
    meta = dict(var.get_metadata())
    return {k: v for k, v in meta.items() if k not in ("hijax", "ref")}


def draw_layers(rule: Any, records: dict, layers: list, tape: Tape, key: Array) -> None:
    """Creates each layer's Feedback variables, outside any trace: stacked like the
    kernel (``nnx.vmap``-built blocks), B with the kernel's sharding and metadata."""
    for lid, (_, layer) in enumerate(layers):
        if lid not in records:
            continue
        op, received, index, names = records[lid]
        tape.input_received, tape.layer_index = received, index
        kvar = getattr(layer, KERNEL[routed_base(type(layer))])
        kval = kvar[...]
        prefix = tuple(kval.shape[:kval.ndim - len(op.kernel_shape)])
        for j, fname in enumerate(names):
            k = jax.random.fold_in(jax.random.fold_in(key, lid), j)
            val = stacked(lambda kk, fname=fname: rule.draw_feedback(tape, fname, kk, op),
                          k, prefix)
            if val.shape == kval.shape:  # B: laid out and partitioned like the kernel
                sharding = getattr(kval, "sharding", None)
                if sharding is not None:
                    val = jax.device_put(val, sharding)
                setattr(layer, fname, Feedback(val, **_meta(kvar)))
            else:
                setattr(layer, fname, Feedback(val))
            add_static(layer, SHAPES, ((fname, tuple(val.shape[len(prefix):])),))
    tape.input_received = False


def draw_receivers(rule: Any, tape: Tape, records: dict, modules: list, key: Array,
                   offset: int) -> None:
    """Creates the receivers' Feedback variables (outside any trace), stacked like their
    module; keys folded with ``offset + receiver id``."""
    names = tuple(rule.receiver_feedback_names)
    for (rid, where), (shape, dtype, probe) in sorted(records.items()):
        module = modules[rid]
        prefix = ()
        if probe is not None:
            real = dict((tuple(p), n) for p, n in nnx.iter_graph(module)).get(probe[0])
            if real is not None:
                full = tuple(real[...].shape)
                prefix = full[:len(full) - len(probe[1])]
        for j, (n, s) in enumerate(zip(names, stored_names(names, where))):
            if isinstance(getattr(module, s, None), Feedback):
                raise ValueError(f"alearn.wrap_nnx: module {getattr(module, PATH, '')!r} "
                                 f"already holds a feedback variable {s!r}")
            k = jax.random.fold_in(jax.random.fold_in(key, offset + rid),
                                   2 * j + (where != "D"))
            val = stacked(lambda kk, n=n: rule.draw_receiver_feedback(tape, n, kk, shape, dtype),
                          k, prefix)
            setattr(module, s, Feedback(val))
            add_static(module, SHAPES, ((s, tuple(val.shape[len(prefix):])),))
            add_static(module, RECEIVER_VARS, (s,))


def check_trace(model: nnx.Module, rule: Any, inputs: tuple, out_shape: tuple, output: Any,
                name: str, shortcuts: bool) -> None:
    """Traces the model once with every map and receiver as a named jit (reading the
    Feedback variables as a real call does, so a StateAxes that forgets them fails here)
    and, if ``shortcuts``, refuses DFA where a map's output reaches several receiving
    points (:func:`alearn.wrappers._coverage.raise_shortcuts`)."""
    batch = batch_of(inputs)
    graphdef, state = nnx.split(model)
    tape = Tape(rule, batch, math.prod(out_shape), out_shape=out_shape,
                error=jnp.zeros((batch, *out_shape)) if rule.needs_carrier else None)
    call = Call(tape, tagged=[], inputs=inputs)

    def run(st):
        token = TAPE.set(call)
        try:
            return get_output(nnx.merge(graphdef, st)(*inputs), output, name)
        finally:
            TAPE.reset(token)

    try:
        closed = jax.make_jaxpr(run)(state)
    except ValueError as exc:
        clear = no_axis_error(exc)
        if clear is not None:
            raise clear from exc
        raise
    finally:
        tape.finished = True
    if shortcuts:
        layers = [types.SimpleNamespace(path=p) for p in call.tagged]
        _coverage.raise_shortcuts(name, rule, closed.jaxpr, layers, api="alearn.wrap_nnx",
                                  call="alearn.wrap_nnx(model, rule, sample_x, key, ")


def batch_of(inputs: Any) -> int:
    leaves = [a for a in jax.tree.leaves(inputs) if getattr(a, "ndim", 0)]
    if not leaves:
        raise ValueError("alearn.wrap_nnx: the model inputs hold no array with a batch axis")
    return leaves[0].shape[0]
