"""``alearn.describe``: what trains how in a wrapped model.

Linen (``alearn.wrap``) and NNX (``alearn.wrap_nnx``, :mod:`alearn.wrappers._nnx_describe`)
models. One row per parameter (and per DFA receiver): the rule that updates it, its feedback
weights (shape, bytes), the layer's activation-sharing role and group, where DFA's signal
reaches the layer's input, and whether a lifted transform stacks it. Computed from an
abstract trace (no arrays are allocated, nothing is compiled).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from alearn.rules.base import Rule
from alearn.wrappers._match import param_matches
from alearn.wrappers._nnx_describe import describe_nnx
from alearn.wrappers._rows import Description, Row, leaves as _leaves, role_and_group
from alearn.wrappers.linen import Wrapped, _call_kwargs
from alearn.wrappers.nnx import WrappedNNX

Array = jax.Array

__all__ = ["Description", "Row", "describe", "role_and_group"]


def describe(model: Any, rule: Rule | None = None, *inputs: Any,
             variables: dict | None = None, train: bool = False) -> Description:
    """Lists every parameter of a wrapped model with the rule that updates it.

    ``model``: ``alearn.wrap(...)`` or ``alearn.wrap_nnx(...)``; ``inputs``: sample model
    inputs (shapes matter). Linen: ``describe(model, rule, *inputs, variables=None)``,
    ``variables`` from ``alearn.init`` (drawn abstractly when omitted); raises the same
    errors as ``init`` (uncovered parameters, DFA shortcuts). NNX: the rule is bound at
    wrap time, so ``describe(model, None, *inputs)`` or ``describe(model, *inputs)``; a
    rule given must be the bound one; the feedback is the model's own.
    """
    if isinstance(model, WrappedNNX):
        if variables is not None or train:
            raise TypeError("alearn.describe(wrapped_nnx, ...): variables= and train= are "
                            "for Linen models; an NNX model holds its own variables (and "
                            "takes its mode from its own arguments)")
        return describe_nnx(model, rule, inputs)
    if not isinstance(model, Wrapped):
        raise TypeError(f"alearn.describe expects alearn.wrap(model) or "
                        f"alearn.wrap_nnx(model, ...), got {type(model).__name__}")
    if not isinstance(rule, Rule):
        raise TypeError(f"alearn.describe(model, rule, *inputs): a Linen model needs the "
                        f"rule, got {type(rule).__name__}")
    if variables is None:
        variables = jax.eval_shape(lambda k: model.init(k, *inputs, rule=rule, train=train),
                                   jax.random.key(0))
    layers: list = []
    kwargs = _call_kwargs(model.model, train)
    jax.eval_shape(lambda v, a: model.tagged_apply(v, a, rule, kwargs, layers),
                   variables, inputs)
    feedback = _leaves(variables.get("feedback", {}))
    by_kernel = {f"{r.path}/{r.kernel_param}": r for r in layers}
    rows = []
    for path, leaf in _leaves(variables["params"]).items():
        rec = by_kernel.get(path)
        shape = tuple(leaf.shape)
        if rec is None:
            update = ("bp (exclude=)" if any(param_matches(path, p) for p in model.exclude)
                      else "local error (element-wise)") if rule.name != "bp" else "bp"
            rows.append(Row(path, shape, update))
            continue
        fb = {k[len(rec.path) + 1:]: a for k, a in feedback.items()
              if k.startswith(rec.path + "/") and "/" not in k[len(rec.path) + 1:]}
        nbytes = sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize for a in fb.values())
        extra = len(shape) - len(rec.op.kernel_shape)
        rows.append(Row(
            path, shape, rec.role or rule.name,
            ", ".join(f"{k} {tuple(a.shape)}" for k, a in sorted(fb.items())), nbytes,
            rec.sharing, rec.input_from if rule.receives else "",
            f"{extra} leading axis (lifted)" if extra > 0 else ""))
    for path, a in sorted(feedback.items()):
        name = path.rsplit("/", 1)[-1]
        module = path.rsplit("/", 1)[0] if "/" in path else ""
        if name == "D_out" or (name == "D" and not any(r.path == module for r in layers)):
            where = "input" if name == "D" else "output"
            rows.append(Row(f"{module} ({where} receiver)", (), "receiver: δ_L D replaces the "
                            "gradient", f"D {tuple(a.shape)}",
                            math.prod(a.shape) * jnp.dtype(a.dtype).itemsize))
    return Description(model.name, rule.name, tuple(rows))
