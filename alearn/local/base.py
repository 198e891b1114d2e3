"""Layer-local learning as a rule: every layer learns from a loss at its own output.

Shared by the local-learning baselines of ASAP thesis Table 5.3 (Mostafa et al. 2018,
Nøkland & Eidnes 2019). Mechanics on the tape:

- every rule-aware layer l >= 1 hosts a local head on its input h (= the output of layer
  l-1 after its batch norm, nonlinearity and pooling); a head is skipped when its input is
  an array that already hosts a head or that the previous layer read (a ResNet block's
  conv1 and projection shortcut read the same block input: one head, hosted by conv1);
- the head's loss needs the labels: heads are tied to the logits by
  :func:`alearn.local._local_loss.attach` in ``on_finish``; the local error reaches h and
  the head's parameters (feedback variables of the hosting layer);
- no error crosses a rule-aware layer (``dx = 0``): layer l-1 learns only from the head at
  its output; the output layer learns from the global error with its own input. In
  ResNets the identity shortcuts still carry local errors down to earlier blocks (the
  shortcut is not a rule-aware layer), as any implementation without block cuts would.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from alearn._layers.ops import LinearOp
from alearn.local import _local_loss
from alearn.rules.base import Rule

Array = jax.Array

_HEADS, _LAST = "local/heads", "local/last_input"


@dataclasses.dataclass(frozen=True)
class LocalRule(Rule):
    """Base of the local-learning rules: subclasses define ``head_params`` and ``head_loss``."""

    def head_params(self, feedback: dict) -> Any:
        """The head's parameters among the hosting layer's feedback variables."""
        raise NotImplementedError

    def head_loss(self) -> Callable[[Array, Any, Array], Array]:
        """A static, hashable ``fn(h, params, y_onehot) -> scalar`` local loss."""
        raise NotImplementedError

    def context(self, tape: Any, x: Array, op: LinearOp) -> Any:
        heads = tape.state.setdefault(_HEADS, [])
        if (tape.layer_index > 0 and tape.state.get(_LAST) is not x
                and all(h is not x for h, _ in heads)):
            heads.append((x, self.head_params(tape.feedback)))
        tape.state[_LAST] = x
        return None

    def on_finish(self, tape: Any, logits: Array) -> Array:
        heads = tuple(tape.state.get(_HEADS, ()))
        if not heads:
            return logits
        fns = (self.head_loss(),) * len(heads)
        return _local_loss.attach(logits, heads, fns)

    def residuals(self, op: LinearOp, x: Array, kernel: Array, feedback: dict, ctx: Any) -> Any:
        del op, kernel, feedback, ctx
        return (x,)

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        (x,) = res
        del carrier_g
        return jnp.zeros(op.in_shape, g.dtype), op.weight_grad(x, g), {}
