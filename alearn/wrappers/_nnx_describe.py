"""``alearn.describe`` for an NNX-wrapped model (:class:`~alearn.WrappedNNX`).

The rows are those of the Linen wrapper's description: one per ``nnx.Param`` (the rule that
updates it, its Feedback variables, sharing role / group, where DFA's signal reaches the
layer's input, leading axes a lifted transform stacks) and one per receiver. The layers are
seen in one abstract trace of the model (the wrap-time check's trace: every map a named
jit; nothing is allocated or compiled); the feedback is read off the model's
:class:`~alearn.Feedback` variables.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from alearn._layers.tape import Tape
from alearn.rules.base import Rule
from alearn.wrappers._match import param_matches
from alearn.wrappers._nnx_call import (PATH, RECEIVER_VARS, SHAPES, TAPE, Call, Feedback,
                                       no_axis_error)
from alearn.wrappers._nnx_dfa import batch_of
from alearn.wrappers._nnx_layers import KERNEL, elementwise, routed_base
from alearn.wrappers._rows import Description, Row


def _path(path: tuple) -> str:
    return "/".join(str(k) for k in path)


def _nbytes(a: Any) -> int:
    return math.prod(a.shape) * jnp.dtype(a.dtype).itemsize


def bound_rule(model: Any, rule: Any, inputs: tuple) -> tuple[Rule, tuple]:
    """The wrapper's rule and the sample inputs from ``describe(model, rule, *inputs)``:
    ``rule`` may be None (the bound rule), the bound rule itself (or an equal one), or,
    not being a Rule, the first input."""
    if rule is not None and not isinstance(rule, Rule):
        return model.rule, (rule, *inputs)
    if rule is not None and rule is not model.rule and rule != model.rule:
        raise ValueError(
            f"alearn.describe: {model.name} was wrapped with rule {model.rule.name!r} "
            f"({model.rule!r}), got rule {rule.name!r} ({rule!r}); an NNX model's rule is "
            "bound at wrap time (pass rule=None, or wrap the model with the rule to "
            "describe)")
    return model.rule, tuple(inputs)


def trace_layers(model: Any, rule: Rule, inputs: tuple) -> list[dict]:
    """One dict per routed map call (path, op, source, role, sharing), in call order,
    from one abstract trace of the wrapped model on ``inputs``."""
    if not inputs:
        raise ValueError("alearn.describe(wrapped_nnx, rule, *inputs): give sample model "
                         "inputs (their shapes and dtypes matter)")
    graphdef, state = nnx.split(model.model)
    batch = batch_of(inputs)
    shape = model.out_shape or (1,)
    described: list = []

    def run(st):  # the inputs closed over, as in the wrap-time passes
        tape = Tape(rule, batch, math.prod(shape), out_shape=shape,
                    error=jnp.zeros((batch, *shape)) if rule.needs_carrier else None)
        call = Call(tape, tagged=[], inputs=inputs, described=described)
        token = TAPE.set(call)
        try:
            return nnx.merge(graphdef, st)(*inputs)
        finally:
            TAPE.reset(token)
            tape.finished = True

    try:
        jax.eval_shape(run, state)
    except ValueError as exc:
        clear = no_axis_error(exc)
        if clear is not None:
            raise clear from exc
        raise
    return described


def describe_nnx(model: Any, rule: Any, inputs: tuple) -> Any:
    """The :class:`~alearn.wrappers.describe.Description` of a wrapped NNX model (see
    :func:`alearn.describe`)."""
    rule, inputs = bound_rule(model, rule, inputs)
    described = trace_layers(model, rule, inputs)
    calls: dict[str, list] = {}
    for rec in described:
        calls.setdefault(rec["path"], []).append(rec)
    modules = {tuple(p): n for p, n in nnx.iter_graph(model.model) if isinstance(n, nnx.Module)}
    rows = []
    for path, node in nnx.iter_graph(model.model):
        if not isinstance(node, nnx.Param) or not path:
            continue
        p, owner = _path(path), modules.get(tuple(path[:-1]))
        base = routed_base(type(owner)) if owner is not None else None
        recs = calls.get(getattr(owner, PATH, None), []) if base is not None else []
        shape = tuple(node[...].shape)
        if base is not None and not recs and str(path[-1]) == KERNEL[base] \
                and not elementwise(type(owner), str(path[-1])):  # (Embed: the lookup)
            rows.append(Row(p, shape, "bp" if rule.name == "bp" else
                            "unused (layer not called on these inputs)"))
            continue
        if not recs or str(path[-1]) != KERNEL[base]:
            update = "bp" if rule.name == "bp" else (
                "bp (exclude=)" if any(param_matches(p, pat) for pat in model.exclude)
                else "local error (element-wise)")
            rows.append(Row(p, shape, update))
            continue
        first = recs[0]
        skip = set(getattr(owner, RECEIVER_VARS, ()))
        fb = {n: v[...] for n, v in sorted(vars(owner).items())
              if isinstance(v, Feedback) and n not in skip}
        extra = len(shape) - len(first["op"].kernel_shape)
        sources = list(dict.fromkeys(r["source"] for r in recs))
        rows.append(Row(
            p, shape, first["role"] or rule.name,
            ", ".join(f"{n} {tuple(a.shape)}" for n, a in fb.items()),
            sum(_nbytes(a) for a in fb.values()), first["sharing"],
            ", ".join(sources) if rule.receives else "",
            f"{extra} leading axis (lifted)" if extra > 0 else ""))
    names = tuple(rule.receiver_feedback_names)
    for path, node in nnx.iter_graph(model.model):
        stored = getattr(node, RECEIVER_VARS, ()) if isinstance(node, nnx.Module) else ()
        for where, suffix in (("input", ""), ("output", "_out")):
            fb = {n: getattr(node, n + suffix)[...] for n in names if n + suffix in stored}
            if not fb:
                continue
            slices = dict(getattr(node, SHAPES, ()))
            extra = max(len(a.shape) - len(slices.get(n + suffix, a.shape))
                        for n, a in fb.items())
            rows.append(Row(
                f"{_path(path)} ({where} receiver)", (),
                "receiver: δ_L D replaces the gradient",
                ", ".join(f"{n} {tuple(a.shape)}" for n, a in fb.items()),
                sum(_nbytes(a) for a in fb.values()),
                stacked=f"{extra} leading axis (lifted)" if extra > 0 else ""))
    return Description(model.name, rule.name, tuple(rows))
