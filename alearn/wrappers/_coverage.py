"""Init-time checks of a wrapped model's traced program: nothing silently trains by BP.

The model is traced once more (abstractly, ``jax.make_jaxpr``) with every rule-aware map
and receiver replaced by a named ``jax.jit`` call (``TAG_MAP`` / ``TAG_RECEIVER``), so
they can be found in the program, nested ``nn.scan`` / ``nn.remat`` bodies included. Two
questions are answered on that program:

1. **Coverage.** A ``dot_general`` or ``conv_general_dilated`` outside the rule-aware maps
   whose one operand depends on parameters only and the other on the data is a linear map
   of parameters the wrapper does not route: those parameters would receive their exact
   BP gradient under FA, DFA, ... Each is an error naming the parameter path, unless
   listed in ``exclude=``. Parameters used element-wise (biases, norm scales, embedding
   lookups, position embeddings) are fine: they take the local error, as the rules say.
2. **DFA shortcuts** (rules that receive the output error at every layer). Every
   rule-aware map injects ``δ_L D`` at its input, every receiver at its own input, and the
   loss at the model output: each is a *receiving point*. If the output of a map reaches
   two receiving points through ops that are not maps (e.g. a residual block's output
   feeds the next block's first conv *and* its identity shortcut), its update sums two
   feedback signals, which is not eq. 2.5. That is an error naming the map and the
   ``blocks=`` pattern that puts a receiver at the block input. Loop bodies (``nn.scan``
   over blocks or time steps) are followed for a few iterations, carries fed back, so a
   residual stream through scanned blocks is seen as in the unrolled model.
"""

from __future__ import annotations

import re
from typing import Any

import jax
from jax.extend import core as jcore

from alearn.wrappers._match import param_matches
from alearn.wrappers.ops import SUPPORTED

TAG_MAP = "alearn_rule_map"
TAG_RECEIVER = "alearn_receiver"
_LINEAR = ("dot_general", "conv_general_dilated")
_LOOPS = ("scan", "while", "cond")


def _sub_jaxpr(eqn) -> Any:
    """The one inlinable sub-program of a call-like eqn (jit, remat, custom_jvp/vjp)."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if j is not None:
            inner = j.jaxpr if hasattr(j, "jaxpr") and not isinstance(j, jcore.Jaxpr) else j
            if len(inner.invars) == len(eqn.invars) and len(inner.outvars) == len(eqn.outvars):
                return inner
    return None


def _loop_bodies(eqn) -> list:
    if eqn.primitive.name == "scan":
        return [(eqn.params["jaxpr"].jaxpr, list(eqn.invars))]
    if eqn.primitive.name == "while":
        nc, nb = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
        carry = list(eqn.invars[nc + nb:])
        return [(eqn.params["body_jaxpr"].jaxpr, list(eqn.invars[nc:nc + nb]) + carry)]
    if eqn.primitive.name == "cond":
        return [(b.jaxpr, list(eqn.invars[1:])) for b in eqn.params["branches"]]
    return []


def _is_tag(eqn, name: str) -> bool:
    return eqn.primitive.name in ("jit", "pjit") and str(eqn.params.get("name", "")).startswith(
        name + "_")


def _tag_index(eqn) -> int:
    return int(str(eqn.params["name"]).rsplit("_", 1)[1])


def tagged(name: str, index: int, fn):
    """``jax.jit(fn)`` under the name ``<name>_<index>`` (found again in the program)."""
    fn.__name__ = f"{name}_{index}"
    return jax.jit(fn)


class _Deps:
    """Which parameters (indices) and whether data each variable depends on."""

    def __init__(self):
        self.params: dict = {}
        self.data: dict = {}
        self.uncovered: set[int] = set()

    def get(self, v) -> tuple[frozenset, bool]:
        if isinstance(v, jcore.Literal):
            return frozenset(), False
        return self.params.get(v, frozenset()), self.data.get(v, False)

    def run(self, jaxpr, ins: list) -> list:
        for v, (p, d) in zip(jaxpr.invars, ins):
            self.params[v], self.data[v] = p, d
        for eqn in jaxpr.eqns:
            args = [self.get(v) for v in eqn.invars]
            outs = self._eqn(eqn, args)
            for v, (p, d) in zip(eqn.outvars, outs):
                self.params[v], self.data[v] = p, d
        return [self.get(v) for v in jaxpr.outvars]

    def _eqn(self, eqn, args: list) -> list:
        union = (frozenset().union(*[p for p, _ in args]) if args else frozenset(),
                 any(d for _, d in args))
        if _is_tag(eqn, TAG_MAP) or _is_tag(eqn, TAG_RECEIVER):
            return [union] * len(eqn.outvars)
        if eqn.primitive.name in _LINEAR:
            (pa, da), (pb, db) = args[0], args[1]
            if pa and not da and db:
                self.uncovered |= pa
            if pb and not db and da:
                self.uncovered |= pb
            return [union] * len(eqn.outvars)
        inner = _sub_jaxpr(eqn)
        if inner is not None and eqn.primitive.name not in _LOOPS:
            return self.run(inner, args)
        if eqn.primitive.name == "scan":
            body = eqn.params["jaxpr"].jaxpr
            nc, ncarry = eqn.params["num_consts"], eqn.params["num_carry"]
            ins = list(args)
            for _ in range(3):  # carries: to a fixed point (sets only grow)
                outs = self.run(body, ins)
                carried = [(p | ins[nc + i][0], d or ins[nc + i][1])
                           for i, (p, d) in enumerate(outs[:ncarry])]
                if carried == ins[nc:nc + ncarry]:
                    break
                ins = ins[:nc] + carried + ins[nc + ncarry:]
            return outs
        for body, body_args in _loop_bodies(eqn):
            self.run(body, [self.get(v) for v in body_args] if len(body_args) == len(
                body.invars) else [union] * len(body.invars))
        return [union] * len(eqn.outvars)


class _Leaks:
    """Receiving points reached from each rule-aware map's output (see module doc).

    One walk over the program: every value carries the set of maps whose output reaches it
    through ops that are not maps or receivers; a map's input, a receiver's input and the
    program's output are receiving points (sinks). Calls (jit, remat, custom_jvp/vjp) are
    walked inline. A loop body (scan, while) is walked for a few iterations, its carries fed
    back, with the iteration in every receiving point's id: a value that enters a scan over
    residual blocks and passes each block's shortcut reaches the receiving points of several
    iterations, exactly as in the unrolled model. ``cond`` branches are walked each.
    """

    ITERATIONS = 3

    def __init__(self):
        # (layer record index, *loop iterations) -> receiving-point ids
        self.reached: dict[tuple, set] = {}
        self.readers: dict[tuple, int] = {}  # (value, *iterations) -> first reading map

    def run(self, jaxpr) -> None:
        outs = self.walk(jaxpr, [frozenset()] * len(jaxpr.invars), ())
        self._sink(frozenset().union(*outs) if outs else frozenset(), ("output",))

    def walk(self, jaxpr, ins: list, it: tuple) -> list:
        """Labels of ``jaxpr``'s outputs given its inputs' (``it``: loop iterations)."""
        env: dict = dict(zip(jaxpr.invars, ins))
        get = lambda v: frozenset() if isinstance(v, jcore.Literal) else env.get(  # noqa: E731
            v, frozenset())
        for eqn in jaxpr.eqns:
            args = [get(v) for v in eqn.invars]
            outs = self._eqn(eqn, args, it)
            for v, lab in zip(eqn.outvars, outs):
                env[v] = lab
        return [get(v) for v in jaxpr.outvars]

    def _eqn(self, eqn, args: list, it: tuple) -> list:
        n_out = len(eqn.outvars)
        union = frozenset().union(*args) if args else frozenset()
        if _is_tag(eqn, TAG_MAP):
            m = _tag_index(eqn)
            label = (m,) + it  # a map inside a loop: one label per iteration (layer slice)
            self.reached.setdefault(label, set())
            if args:  # one receiving point per value, named by its first reader
                key = (id(eqn.invars[0]),) + it
                first = self.readers.setdefault(key, m)
                self._sink(args[0], ("in", id(eqn.invars[0]), first) + it)
            return [frozenset({label})] * n_out
        if _is_tag(eqn, TAG_RECEIVER):
            if args:
                self._sink(args[0], ("recv", id(eqn)) + it)
            return [frozenset()] * n_out
        name = eqn.primitive.name
        if name == "scan":
            return self._scan(eqn, args, it)
        if name == "while":
            nc, nb = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
            body = eqn.params["body_jaxpr"].jaxpr
            consts, carry = args[nc:nc + nb], args[nc + nb:]
            for i in range(self.ITERATIONS):
                carry = [c | o for c, o in zip(carry, self.walk(body, consts + carry,
                                                                it + (id(eqn), i)))]
            return carry
        if name == "cond":
            outs = [frozenset()] * n_out
            for b, branch in enumerate(eqn.params["branches"]):
                got = self.walk(branch.jaxpr, args[1:], it + (id(eqn), b))
                outs = [o | g for o, g in zip(outs, got)]
            return outs
        inner = _sub_jaxpr(eqn)
        if inner is not None:
            return self.walk(inner, args, it)
        return [union] * n_out

    def _scan(self, eqn, args: list, it: tuple) -> list:
        body = eqn.params["jaxpr"].jaxpr
        nc, ncarry = eqn.params["num_consts"], eqn.params["num_carry"]
        consts, carry, xs = args[:nc], args[nc:nc + ncarry], args[nc + ncarry:]
        ys = [frozenset()] * (len(body.outvars) - ncarry)
        for i in range(min(self.ITERATIONS, int(eqn.params.get("length", 1)) or 1)):
            outs = self.walk(body, consts + carry + xs, it + (id(eqn), i))
            carry = outs[:ncarry]
            ys = [y | o for y, o in zip(ys, outs[ncarry:])]
        return carry + ys

    def _sink(self, labels: frozenset, point: Any) -> None:
        for m in labels:
            self.reached.setdefault(m, set()).add(point)


def _pattern(path: str) -> str:
    return "/".join(re.sub(r"\d+$", "*", p) for p in path.split("/"))


def _suggest(points: set, layers: list) -> tuple:
    """Block patterns: the modules enclosing the layers that read the leaking value."""
    out = []
    for point in points:
        if point[0] == "in" and point[2] < len(layers):
            parent = layers[point[2]].path.rsplit("/", 1)
            if len(parent) == 2 and _pattern(parent[0]) not in out:
                out.append(_pattern(parent[0]))
    return tuple(out) or ("<the residual blocks' module paths>",)


def check(wrapped: Any, rule: Any, variables: dict, args: tuple, kwargs: dict) -> None:
    """Raises ``ValueError`` for uncovered parameters and, for DFA, for shortcuts."""
    params = variables["params"]
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    names = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in flat]
    others = {k: v for k, v in variables.items() if k not in ("params",)}

    layers: list = []

    def fn(p, inputs):
        return wrapped.tagged_apply({**others, "params": p}, inputs, rule, kwargs, layers)

    closed = jax.make_jaxpr(fn)(params, args)
    jaxpr = closed.jaxpr
    n_params = len(flat)
    deps = _Deps()
    ins = [(frozenset({i}), False) if i < n_params else (frozenset(), True)
           for i in range(len(jaxpr.invars))]
    deps.run(jaxpr, ins)
    bad = sorted(names[i] for i in deps.uncovered
                 if not any(param_matches(names[i], p) for p in wrapped.exclude))
    if bad:
        raise ValueError(
            f"{wrapped.name}: parameter(s) {bad} enter a linear map the wrapper does not "
            f"route ({SUPPORTED} are routed), so rule {rule.name!r} would leave them on "
            "exact backprop. Express the map with one of those layers, or list the "
            "parameters in alearn.wrap(..., exclude=(...)) to train them by BP on purpose")
    if not rule.receives or wrapped.dfa_shortcuts == "allow":
        return
    raise_shortcuts(wrapped.name, rule, jaxpr, layers)


def shortcut_points(jaxpr) -> dict[tuple, set]:
    """Per rule-aware map (``(TAG_MAP index, *loop iterations)``): the receiving points its
    output reaches through ops that are not maps (see the module docstring, question 2)."""
    leaks = _Leaks()
    leaks.run(jaxpr)
    return leaks.reached


def _point_name(point: tuple, layers: list) -> str:
    steps = point[3 if point[0] == "in" else 2:][1::2]
    step = f", loop step {'/'.join(str(i + 1) for i in steps)}" if steps else ""
    if point[0] == "in":
        return f"{layers[point[2]].path} (input{step})" if point[2] < len(layers) else \
            f"a layer (input{step})"
    return {"recv": f"a receiver{step.replace(', ', ' (') + ')' if step else ''}",
            "output": "the output"}[point[0]]


def raise_shortcuts(where: str, rule: Any, jaxpr, layers: list,
                    api: str = "alearn.wrap", call: str = "alearn.wrap(model, ") -> None:
    """``ValueError`` for the first map whose output reaches several receiving points.

    ``layers[i].path``: the module path of the map tagged ``i``; ``api`` / ``call``: how
    the message spells the wrapper (``alearn.wrap`` / ``alearn.wrap(model, ``).
    """
    for label, points in sorted(shortcut_points(jaxpr).items()):
        m = label[0]
        if len(points) > 1 and m < len(layers):
            where_to = sorted({_point_name(p, layers) for p in points})
            path = layers[m].path
            if len(label) > 1 and any(p[0] == "in" and len(p) > 3 for p in points):
                recurrent = (" Inside a loop this is a recurrence: a carried state (e.g. an "
                             "LSTM's cell state) takes later steps' signals to this step, "
                             "as backprop through time does; dfa_shortcuts='allow' accepts "
                             "it.")
            else:
                recurrent = ""
            raise ValueError(
                f"{where}: under rule {rule.name!r} the output of layer {path!r} "
                f"reaches {len(points)} receiving points ({', '.join(where_to)}) through ops "
                "that are not layers (a "
                "residual shortcut, or one value read by a layer and by a skip connection): "
                "its update would sum several feedback signals instead of eq. 2.5. Put a "
                "receiver where the value splits: at the input of the residual blocks, e.g. "
                f"{call}blocks={_suggest(points, layers)!r}), or on the output of "
                f"this layer (or of the sub-block it ends), e.g. {call}"
                f"receivers=({_pattern(path)!r},)); or accept the summed signals with "
                f"{api}(..., dfa_shortcuts='allow').{recurrent}")
