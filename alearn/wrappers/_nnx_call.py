"""State of one ``WrappedNNX`` call, and the :class:`Feedback` variables it reads.

A :class:`Call` holds the tape, the model's inputs, the arrays already consumed by a routed
layer (the first consumer owns DFA's D) and the receivers' outputs (layers reading a model
input or a receiver's output own no D). Its
subclass :class:`Recorder` is the wrap-time abstract pass that records what every layer
and receiver needs; a call with ``tagged`` set is the wrap-time check trace, where every
map and receiver is a named jit (:mod:`alearn.wrappers._coverage`).
"""

from __future__ import annotations

import contextvars
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from alearn._layers.tape import Tape
from alearn.wrappers import _coverage
from alearn.wrappers._match import input_source
from alearn.wrappers._rows import role_and_group

Array = jax.Array

TAPE: contextvars.ContextVar[Any] = contextvars.ContextVar("alearn_nnx_tape", default=None)
# static attributes set at wrap time (they survive nnx.split / merge)
ID = "_alearn_layer_id"          # a routed layer's number
RID = "_alearn_receiver_id"      # a blocks= / receivers= module's number
PATH = "_alearn_path"            # its module path (error messages, the check)
SHAPES = "_alearn_feedback_shapes"  # ((name, shape of one slice), ...) of its Feedback
RECEIVER_VARS = "_alearn_receiver_vars"  # names of its receivers' Feedback variables


class Feedback(nnx.Variable):
    """Feedback weights of a learning rule (FA's B, DFA's D, ...); not forward parameters."""


class Call:
    """State of one wrapped call (see module docstring).

    ``inputs``: the model's positional inputs (a routed layer handed one of those very
    arrays sends DFA nothing down: the input's gradient is discarded, so it owns no D).
    ``described``: a list to append each routed map's description to (``alearn.describe``;
    the tagged trace only)."""

    def __init__(self, tape: Tape, tagged: list | None = None, inputs: Any = (),
                 described: list | None = None):
        self.tape = tape
        self.inputs = [a for a in jax.tree.leaves(inputs) if hasattr(a, "shape")]
        self.seen: list[tuple[Array, str]] = []  # arrays consumed by a layer (array, by)
        self.received: list[tuple[Array, str]] = []  # receivers' outputs (array, at)
        self.tagged = tagged  # the check trace: module path of each tagged map, in order
        self.n_receivers = 0
        self.described = described
        self._groups: list[Array] = []  # activation-sharing groups (describe)

    def source(self, entry: Any, path: str) -> str:
        """Where DFA's signal from the layer ``path`` reading ``entry`` goes: "own" (it
        sends δ_L D; first consumer of the array), "model input", "receiver <path>" or
        "shared with <path>" (it owns no D)."""
        if entry is None:
            return "own"
        source = input_source(entry, self.inputs, self.received, self.seen)
        if source == "own":
            self.seen.append((entry, path))
        return source

    def tag_map(self, layer: nnx.Module, op: Any, x: Array, kernel: Array,
                feedback: dict, source: str = "own") -> Array:
        path = getattr(layer, PATH, type(layer).__name__)
        if self.described is not None:
            self.described.append(self._describe(path, op, x, feedback, source))
        self.tagged.append(path)
        y = _coverage.tagged(_coverage.TAG_MAP, len(self.tagged) - 1,
                             lambda a, w, fb: op.apply(a, w))(x, kernel, feedback)
        self.tape.layer_index += 1
        return y

    def _describe(self, path: str, op: Any, x: Array, feedback: dict, source: str) -> dict:
        """Role and activation-sharing group of the map about to run (as the Linen
        wrapper's describe trace)."""
        role, sharing = role_and_group(self.tape, op, x, feedback, self._groups)
        return {"path": path, "op": op, "source": source, "role": role, "sharing": sharing}

    def tag_receiver(self, h: Array, feedback: dict) -> Array:
        self.n_receivers += 1
        return _coverage.tagged(_coverage.TAG_RECEIVER, self.n_receivers - 1,
                                lambda a, fb: a * 1)(h, feedback)


def _zeros(fn: Any) -> Array:
    s = jax.eval_shape(fn, jax.random.key(0))
    return jnp.zeros(s.shape, s.dtype)


class Recorder(Call):
    """The wrap-time passes: per layer id, (op, input_received, layer_index, names); per
    (receiver id, "D" | "D_out"), (activation shape, dtype, probe) where the probe is the
    in-trace shape of one of the module's variables (its stacking prefix at draw time)."""

    def __init__(self, tape: Tape, records: dict, receivers: dict, inputs: Any = ()):
        super().__init__(tape, inputs=inputs)
        self.records, self.receivers = records, receivers

    def record(self, lid: Any, op: Any) -> dict:
        tape = self.tape
        names = tape.rule.layer_feedback_names(tape, op)
        self.records.setdefault(lid, (op, tape.input_received, tape.layer_index, tuple(names)))
        return {n: _zeros(lambda k, n=n: tape.rule.draw_feedback(tape, n, k, op))
                for n in names}

    def record_receiver(self, module: nnx.Module, where: str, h: Array) -> dict:
        tape, rule = self.tape, self.tape.rule
        probe = None
        for path, node in nnx.iter_graph(module):
            if isinstance(node, nnx.Variable) and not isinstance(node, Feedback) \
                    and hasattr(node[...], "shape"):
                probe = (tuple(path), tuple(node[...].shape))
                break
        self.receivers.setdefault((getattr(module, RID), where),
                                  (tuple(h.shape), h.dtype, probe))
        return {n: _zeros(lambda k, n=n: rule.draw_receiver_feedback(
            tape, n, k, tuple(h.shape), h.dtype)) for n in rule.receiver_feedback_names}


def axes_error(where: str, name: str, got: Sequence[int], want: Sequence[int]) -> ValueError:
    return ValueError(
        f"alearn.wrap_nnx: {where} reads its feedback variable {name!r} with shape "
        f"{tuple(got)} where one slice has shape {tuple(want)}: an nnx.scan / nnx.vmap "
        "over the stacked module maps nnx.Param but broadcasts alearn.Feedback (its "
        "StateAxes gives the feedback variables no axis). Map alearn.Feedback like "
        "nnx.Param, e.g. nnx.StateAxes({(nnx.Param, alearn.Feedback): 0, ...: None})")


def no_axis_error(exc: Exception) -> ValueError | None:
    """The clear error for NNX's own "No axis found ... Feedback" (StateAxes without a
    filter for alearn.Feedback), else None."""
    msg = str(exc)
    if "No axis found" not in msg or "Feedback" not in msg:
        return None
    path = msg.split("path=", 1)[1].split(", variable", 1)[0] if "path=" in msg else "?"
    return ValueError(
        f"alearn.wrap_nnx: an nnx.scan / nnx.vmap StateAxes in the model gives no axis to "
        f"the feedback variable at {path} (it maps nnx.Param only). Map alearn.Feedback "
        "like nnx.Param, e.g. nnx.StateAxes({(nnx.Param, alearn.Feedback): 0, ...: None})")


def read_feedback(module: nnx.Module, names: Sequence[str], rule: Any,
                  stored: Sequence[str] | None = None) -> dict:
    """``{name: value}`` of the module's Feedback variables (named ``stored``, default
    ``names``), checked against one slice's shape. Without ``stored`` (a routed layer) the
    layer must hold exactly the rule's feedback (its receivers' variables apart)."""
    where = f"{type(module).__name__} {getattr(module, PATH, '')!r}"
    if stored is None:
        stored = tuple(names)
        skip = getattr(module, RECEIVER_VARS, ())
        present = sorted(n for n, v in vars(module).items()
                         if isinstance(v, Feedback) and n not in skip)
        if sorted(names) != present:
            raise ValueError(
                f"{where} holds feedback {present} but rule {rule.name!r} needs "
                f"{list(names) or 'none'} there: wrap the model with this rule")
    shapes = dict(getattr(module, SHAPES, ()))
    out = {}
    for n, s in zip(names, stored):
        var = getattr(module, s, None)
        if not isinstance(var, Feedback):
            raise ValueError(f"{where} has no feedback variable {s!r} for rule {rule.name!r}: "
                             "wrap the model with this rule")
        val = var[...]
        if s in shapes and tuple(val.shape) != shapes[s]:
            raise axes_error(where, s, val.shape, shapes[s])
        out[n] = val
    return out


def explicit(a: Any) -> bool:
    """Whether ``a`` is partitioned over an explicit mesh axis."""
    sharding = getattr(jax.typeof(a), "sharding", None)
    spec = getattr(sharding, "spec", None)
    return spec is not None and any(s is not None for s in spec)


def replicated(a: Array) -> Array:
    return jax.sharding.reshard(a, jax.sharding.PartitionSpec()) if explicit(a) else a
