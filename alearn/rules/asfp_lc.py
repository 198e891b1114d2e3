"""ASFP with local classifiers, ASFP+LC (ASAP thesis Sec. 5.2.4, Table 5.5).

"We placed a local classifier at the end of the ASFP block. The local classifier consists
of 2x2 average pool layer and fully-connected layer, and this fully-connected layer is
trained by Feedback Alignment." How this composes with the tape and the loss:

- Where: a local classifier reads every new shared activation ``h̃_m`` (the end of an
  ASFP block): with ``grouping="authors_code"`` on a ResNet every block input that is
  taken as a shared activation (k = 2: every block, k = 4: every other block, the stem
  output included); with counted groups (plain chains, ``"block_input"``) the input of
  the first layer of every group after the first layer's. Its weights live in the
  ``feedback`` collection of the first layer that reads that activation (conv1 of the
  block, or the group's first layer) as ``LC`` (shape (pooled features, classes)); every
  sharing layer owns an ``LC`` (unused ones get zero updates). Plain chains under the
  default ``dense="fa"`` share only among convs: the AlexNet gets one group and so no
  local classifier (Table 5.5 is ResNet-18/34).
- Forward: ``z_m = flatten(avgpool2x2(h̃_m)) @ LC`` (odd sides edge-padded), collected in
  ``tape.state``. ``Rule.on_finish`` ties all ``z_m`` to the logits with an identity
  custom-VJP, so nothing changes in the forward output or the loss function.
- Local error: the cotangent arriving at the logits is ``δ_L = (softmax(out) − y)/N``
  (``alearn.cross_entropy``: mean softmax cross-entropy), so the labels are recovered as
  ``y/N = softmax(out)/N − δ_L`` and each classifier gets ``e_m = (softmax(z_m) − y)/N``,
  scaled by ``lc_weight``. (A different loss would need a different recovery.)
- Training: ``ΔLC = pooledᵀ e_m``; the error enters the network through a fixed random
  matrix (FA, drawn in-trace from ``seed`` and the layer index): ``pool2x2ᵀ(e_m D_mᵀ)``,
  added to the error already arriving at ``h̃_m`` from above through the ASFP feedback
  path. Models do not hand the tape's output back to the network at block boundaries, so
  the global error cannot be cut there: ASFP+LC here is ASFP plus an auxiliary local
  loss per block (not purely block-local learning).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from alearn._layers.ops import LinearOp
from alearn.rules import _checks, _feedback_init
from alearn.rules import dimension_matching as dm
from alearn.rules._sharing import _NEW, features_shape
from alearn.rules.asfp import ASFP

Array = jax.Array

_LOGITS = "lc/logits"


def _pool(x: Array) -> Array:
    """2x2 average pool (NHWC, edge-padded to even sides), flattened; vectors unchanged."""
    if x.ndim == 4:
        x = dm.resize_axis(x, 1, math.ceil(x.shape[1] / 2), 2)
        x = dm.resize_axis(x, 2, math.ceil(x.shape[2] / 2), 2)
    return x.reshape(x.shape[0], -1)


def _pooled_features(in_shape: tuple[int, ...]) -> int:
    if len(in_shape) == 4:
        return math.ceil(in_shape[1] / 2) * math.ceil(in_shape[2] / 2) * in_shape[3]
    return int(math.prod(in_shape[1:]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def local_head(h: Array, lc: Array, d: Array, spec: jax.ShapeDtypeStruct) -> Array:
    """Local classifier logits ``pool(h) @ lc``; backward is FA through the fixed ``d``.

    ``spec`` is ``h``'s static shape and dtype (the pooling transpose needs it).
    """
    del spec
    return jnp.dot(_pool(h), lc)


def _head_fwd(h, lc, d, spec):
    del spec
    p = _pool(h)
    return jnp.dot(p, lc), (p, d)


def _head_bwd(spec, res, e):
    p, d = res
    (dh,) = jax.linear_transpose(_pool, spec)(jnp.dot(e, d.T))
    return dh, jnp.dot(p.T, e), jnp.zeros_like(d)


local_head.defvjp(_head_fwd, _head_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def attach(logits: Array, local_logits: tuple, weight: float) -> Array:
    """Identity on ``logits``; the backward sends each local classifier its local error."""
    del local_logits, weight
    return logits


def _attach_fwd(logits, local_logits, weight):
    return logits, (jax.nn.softmax(logits), tuple(jax.nn.softmax(z) for z in local_logits))


def _attach_bwd(weight, res, delta):
    p, ps = res
    n = delta.shape[0]
    y_over_n = p / n - delta  # δ_L = (softmax(out) − y) / N
    return delta, tuple(weight * (q / n - y_over_n) for q in ps)


attach.defvjp(_attach_fwd, _attach_bwd)


@dataclasses.dataclass(frozen=True)
class ASFPLC(ASFP):
    """ASFP (eqs. 4.7-4.10) plus a local classifier at every group boundary (module doc).

    Attributes:
      as :class:`alearn.rules.asfp.ASFP`, and
      lc_weight: scale of the local errors (1.0: each local loss weighs as the global one).
    """

    name = "asfp_lc"
    feedback_names: ClassVar[tuple[str, ...]] = ("B", "LC")

    lc_weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _checks.non_negative(self.name, "lc_weight", self.lc_weight)

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        if name != "LC":
            return super().init_feedback(name, key, op, num_classes)
        shape = (_pooled_features(op.in_shape), num_classes)
        return _feedback_init.draw(key, shape, "lecun_normal", 1.0, op.dtype)

    def context(self, tape: Any, x: Array, op: LinearOp) -> Any:
        ctx = super().context(tape, x, op)
        new = tape.state.get(_NEW) if ctx is not None else None
        if new is not None and tape.layer_index > 0:
            del tape.state[_NEW]  # one classifier per new shared activation
            if new is ctx[0]:
                h = self.matched(op, ctx)
            else:  # authors_code: conv1 reads the new block input itself
                h = dm.match(new, features_shape(op), self.match if self.match != 3 else 2
                             ).reshape(op.in_shape)
            lc = tape.feedback["LC"]
            key = jax.random.fold_in(jax.random.key(self.seed + 1), tape.layer_index)
            d = _feedback_init.draw(key, lc.shape, "lecun_normal", 1.0, lc.dtype)
            spec = jax.ShapeDtypeStruct(h.shape, h.dtype)
            tape.state.setdefault(_LOGITS, []).append(local_head(h, lc, d, spec))
        return ctx

    def on_finish(self, tape: Any, logits: Array) -> Array:
        zs = tuple(tape.state.get(_LOGITS, ()))
        if not zs:
            return logits
        return attach(logits, zs, float(self.lc_weight))
