"""The per-call forward companion that carries rule signals through a model.

A :class:`Tape` is created by a model at the start of every ``apply`` from the rule it is
given, handed to each rule-aware layer in forward order, and closed on the logits. It is a
plain Python object that lives inside one trace: it holds

- ``carrier``: for rules that need the output error at every layer (DFA), a zero array of
  shape (batch, classes) threaded through every layer and added to the logits, so that its
  cotangent is exactly δ_L at every layer's backward pass (DESIGN.md: "a carrier whose
  cotangent delivers δ_L", no global state);
- ``layer_index``: how many rule-aware layers have run so far in this call;
- ``state``: a dict the rule owns for forward values such as shared activations;
- ``feedback``: the feedback variables of the layer being applied (set by ``apply_rule``
  just before ``rule.context``, so a context may use them, e.g. Forward Alignment's C).

Models mark natural block boundaries with :meth:`block` (a residual block's input); rules
that group layers (ASAP) may use those marks or the layer count.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


class Tape:
    """Forward-pass companion of one model application (see module docstring)."""

    def __init__(self, rule: Any, batch_size: int, num_classes: int, dtype: Any = jnp.float32):
        self.rule = rule
        self.num_classes = num_classes
        self.layer_index = 0
        self.state: dict[str, Any] = {}
        self.feedback: dict[str, Any] = {}
        self.carrier = jnp.zeros((batch_size, num_classes), dtype) if rule.needs_carrier else None

    def block(self, x: Array) -> None:
        """Marks ``x`` as the input of a block of layers (e.g. a residual block)."""
        self.rule.on_block(self, x)

    def finish(self, logits: Array) -> Array:
        """Closes the tape on the model output; routes δ_L into the carrier.

        The rule's ``on_finish`` hook sees the logits first (local classifiers of ASFP+LC
        attach their local errors there); the default returns them unchanged.
        """
        logits = self.rule.on_finish(self, logits)
        if self.carrier is None:
            return logits
        if logits.shape != self.carrier.shape:
            raise ValueError(
                f"model output shape {logits.shape} does not match the carrier shape "
                f"{self.carrier.shape} (batch, num_classes)"
            )
        return logits + self.carrier.astype(logits.dtype)
