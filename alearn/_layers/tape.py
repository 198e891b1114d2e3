"""The per-call forward companion that carries rule signals through a wrapped model.

Private machinery of :func:`alearn.wrap` / :func:`alearn.wrap_nnx`: the wrapper creates a
:class:`Tape` at the start of every call from the rule it is given, hands it to each linear
map it routes, in forward order, and closes it on the selected output. It is a plain Python
object that lives inside one trace: it holds

- ``carrier``: for rules that need the output error at every layer (DFA), a zero array of
  shape (batch, classes) threaded through every layer and added to the output, so that its
  cotangent is exactly δ_L at every layer's backward pass (DESIGN.md: "a carrier whose
  cotangent delivers δ_L", no global state); or ``error``, δ_L given up front;
- ``layer_index``: how many rule-aware maps have run so far in this call;
- ``state``: a dict the rule owns for forward values such as shared activations;
- ``feedback``: the feedback variables of the layer being applied (set just before
  ``rule.context``, so a context may use them, e.g. Forward Alignment's C);
- ``input_received``: whether the map about to run reads the output of a receiver (then
  DFA's receiver delivers ``D·δ_L`` there and the map owns no D).

The wrapper marks declared block inputs with :meth:`block`; rules that group layers (ASAP)
use those marks or the layer count. DFA's receivers (the ASAP authors'
``Feedback_Receiver``) are placed by the wrapper too (``blocks=`` / ``receivers=``,
:func:`alearn._layers.receiver.run_receiver`).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import jax
import jax.numpy as jnp

Array = jax.Array

# Tapes created while an alearn entry point traces a model (see :func:`checked`).
_TRACKED: contextvars.ContextVar[list | None] = contextvars.ContextVar("alearn_tapes",
                                                                      default=None)


class Tape:
    """Forward-pass companion of one model application (see module docstring)."""

    def __init__(self, rule: Any, batch_size: int, num_classes: int, dtype: Any = jnp.float32,
                 *, out_shape: tuple[int, ...] | None = None, error: Array | None = None):
        """``out_shape``: the model output's shape without the batch axis (default
        ``(num_classes,)``); DFA draws position-wise feedback for outputs with axes between
        batch and features. ``error``: the output error δ_L, given up front (shape (batch,
        *out_shape)). With it, rules that need δ_L (DFA) read it directly in every layer's
        backward pass instead of through the carrier, so layers inside ``nn.scan`` /
        ``nnx.scan`` bodies work (nothing is threaded out of a lifted trace); see
        :func:`alearn.value_and_updates`, which computes δ_L by a first forward pass.
        """
        self.rule = rule
        self.num_classes = num_classes
        self.out_shape = tuple(out_shape) if out_shape is not None else (num_classes,)
        self.error = error
        # Per layer: whether the layer's input is the output of a receiver (then DFA's
        # receiver delivers D·δ_L there and the layer sends nothing down); set by the wrapper.
        self.input_received = False
        self.layer_index = 0
        self.state: dict[str, Any] = {}
        self.feedback: dict[str, Any] = {}
        self.finished = False
        self.model_name: str | None = None  # set by :meth:`close` (for rules' messages)
        tracked = _TRACKED.get()
        if tracked is not None:
            tracked.append(self)
        self.carrier = (jnp.zeros((batch_size, num_classes), dtype)
                        if rule.needs_carrier and error is None else None)

    def block(self, x: Array) -> None:
        """Marks ``x`` as the input of a block of layers (a declared residual block)."""
        self.rule.on_block(self, x)

    def close(self, model_name: str | None = None) -> None:
        """Marks the trace over and calls the rule's ``on_close`` (every layer has run).

        :meth:`finish` calls it; so do the wrappers where they end a trace without
        ``finish`` (rules not driven by the output). ``model_name`` names the model in the
        rule's messages where no Flax Linen module is being applied any more.
        """
        self.finished = True
        if model_name:
            self.model_name = model_name
        self.rule.on_close(self)

    def finish(self, logits: Array) -> Array:
        """Closes the tape on the model output; routes δ_L into the carrier.

        The rule's ``on_finish`` hook sees the logits first (local classifiers of ASFP+LC
        attach their local errors there); the default returns them unchanged.
        """
        self.close()
        logits = self.rule.on_finish(self, logits)
        if self.carrier is None:
            return logits
        if logits.shape != self.carrier.shape:
            raise ValueError(
                f"model output shape {logits.shape} does not match the carrier shape "
                f"{self.carrier.shape} (batch, num_classes)"
            )
        return logits + self.carrier.astype(logits.dtype)


def needs_finish(rule: Any) -> bool:
    """Whether skipping ``Tape.finish`` changes what ``rule`` computes."""
    from alearn.rules.base import Rule  # pylint: disable=import-outside-toplevel
    return bool(rule.needs_carrier) or type(rule).on_finish is not Rule.on_finish


@contextlib.contextmanager
def checked(model: Any) -> Iterator[None]:
    """Fails when ``model`` creates a :class:`Tape` that it never closes with ``finish``.

    Wraps a trace of ``model`` in ``alearn.init`` / ``alearn.value_and_updates``. Without
    ``tape.finish(output)`` DFA's carrier never receives δ_L (every hidden layer would get a
    zero update) and ASFP+LC's local classifiers are never attached: both silent, so the
    entry points raise instead.
    """
    tapes: list = []
    token = _TRACKED.set(tapes)
    try:
        yield
    finally:
        _TRACKED.reset(token)
    for tape in tapes:
        if tape.layer_index and not tape.finished and needs_finish(tape.rule):
            raise ValueError(
                f"{type(model).__name__} created a Tape for rule {tape.rule.name!r} and ran "
                f"{tape.layer_index} rule-aware layer(s) but never called tape.finish(output): "
                f"rule {tape.rule.name!r} needs it (end __call__ with `return "
                "tape.finish(logits)`, or use alearn.wrap on a plain Flax model)")
