"""Shared-activation bookkeeping for AS, ASAP, ASFP and ASFP+LC (ASAP thesis Ch. 4).

How layers are grouped (the "blocks" of size k of eqs. 4.1-4.6):

- Layer 0 (the first rule-aware layer, whose input is the data) is its own group. AS
  trains it with its own input (so AS with k = 1 is exactly BP); ASAP/ASFP do not train
  it ("input of the first layer has considerably smaller dimension ... can't be shared
  activation", Sec. 5.1.1): its kernel update is exactly zero and the rule's transform
  then freezes the whole module (bias included, no decay).
- Layer counting (models that never call ``tape.block``: MLP, AlexNet): from layer 1 on,
  every k consecutive layers form a group, and the group shares the real input of its
  first layer. k = 2 on AlexNet (conv1..3, fc1..3): {conv1}, {conv2, conv3}, {fc1, fc2},
  {fc3}.
- Block marks (models that call ``tape.block(x)`` at every residual block input: the
  ResNets): once a model has marked a block, only marks start groups: a mark takes its
  ``x`` as the new shared activation when at least k layers have used the current one
  (always at the first mark). With two convs per basic block, k = 2 shares each block's
  input among the block's layers (conv1, conv2 and the projection shortcut), k = 4 shares
  the input of every other block among two blocks. Layers after the last mark (the
  classifier) belong to the last group.
- A dense layer whose shared activation is a conv map that does not flatten exactly to
  its input starts a new group with its own input (no meaningful correspondence between a
  pooled map and dense features; the dense head's inputs are small).

The shared activation is stored once in ``tape.state`` and the same traced array is
handed to every layer of its group, so the compiled step keeps one copy of it; the layer's
real input is not a residual of ASAP (that is the memory saving of Ch. 6).

Difference from the official code (Woo et al.): in its ResNet, conv1 of block m uses the
input of block m-1 and conv2 the input of block m (groups offset by one layer, Algorithm 1
indexing); here all layers of block m use block m's input, so conv1's update is exact and
eq. 5.3 holds for every layer of the block.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import optax

from alearn.layers.ops import LinearOp
from alearn.rules import _checks, _feedback_init
from alearn.rules import dimension_matching as dm
from alearn.rules.base import Rule

Array = jax.Array

_SHARED, _SINCE, _MARKED = "as/shared", "as/since", "as/marked"


@dataclasses.dataclass(frozen=True)
class SharingRule(Rule):
    """Common fields and bookkeeping of the activation-sharing rules (private base).

    Attributes:
      k: block size (layers per sharing group), >= 1.
      match: dimension-matching method 1, 2 or 3 (``dimension_matching``).
      seed: seed of method 3's fixed random projections (folded with the layer index).
      share_dense: dense layers take part in sharing (True, as every layer in the thesis'
        description); False: dense layers use their own input and leave the groups alone
        (the official code trains its FC layers with their own inputs).
    """

    train_first: ClassVar[bool] = False

    k: int = 2
    match: int = 1
    seed: int = 0
    share_dense: bool = True

    def __post_init__(self):
        _checks.positive_int(self.name, "k", self.k)
        dm.validate(self.name, self.match)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"rule {self.name!r}: seed={self.seed!r} must be an integer")

    # --- forward bookkeeping -------------------------------------------------------------
    def on_block(self, tape: Any, x: Array) -> None:
        st = tape.state
        st[_MARKED] = True
        if _SHARED not in st or st.get(_SINCE, self.k) >= self.k:
            st[_SHARED], st[_SINCE] = x, 0

    def shared_for(self, tape: Any, x: Array) -> Array | None:
        """The shared activation layer ``tape.layer_index`` uses (None: untrained layer 0)."""
        st = tape.state
        if tape.layer_index == 0 and not st.get(_MARKED, False):
            st[_SHARED], st[_SINCE] = x, self.k  # layer 0 is its own group
            return x if self.train_first else None
        if not self.share_dense and x.ndim == 2:
            return x
        shared = st.get(_SHARED)
        new_group = shared is None or (not st.get(_MARKED, False) and st[_SINCE] >= self.k)
        if shared is not None and shared.ndim == 4 and x.ndim == 2:
            new_group = new_group or shared[0].size != x.shape[-1]
        if new_group:
            st[_SHARED], st[_SINCE] = x, 0
        st[_SINCE] += 1
        return st[_SHARED]

    def context(self, tape: Any, x: Array, op: LinearOp) -> Any:
        shared = self.shared_for(tape, x)
        proj = None
        if shared is not None and self.match == 3 and tuple(shared.shape) != op.in_shape:
            key = jax.random.fold_in(jax.random.key(self.seed), tape.layer_index)
            proj = dm.projection(key, shared.shape, op.in_shape, op.dtype)
        return (shared, proj)

    def matched(self, op: LinearOp, ctx: Any) -> Array | None:
        """The shared activation brought to the layer input's shape (in the backward pass)."""
        shared, proj = ctx
        if shared is None:
            return None
        return dm.match(shared, op.in_shape, self.match, proj)


@dataclasses.dataclass(frozen=True)
class AsymmetricSharingRule(SharingRule):
    """Sharing rules with a learned feedback matrix B (ASAP, ASFP) and decay λ."""

    feedback_names: ClassVar[tuple[str, ...]] = ("B",)
    trains_feedback: ClassVar[bool] = True

    decay: float = 5e-4
    feedback_init: str = "he_normal"
    feedback_scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _checks.non_negative(self.name, "decay", self.decay)
        _feedback_init.validate(self.name, self.feedback_init, self.feedback_scale)

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        if name != "B":
            return super().init_feedback(name, key, op, num_classes)
        return _feedback_init.draw(key, op.kernel_shape, self.feedback_init,
                                   self.feedback_scale, op.dtype)

    def transform(self) -> optax.GradientTransformation:
        return freeze_and_decay(self.decay)


def _frozen(node: Mapping) -> Array:
    return jnp.all(node["kernel"] == 0)


def _frozen_paths(node: Any, path: tuple = ()) -> dict:
    """{module path: frozen flag} for every params module with a kernel."""
    out = {}
    if isinstance(node, Mapping):
        if "kernel" in node and not isinstance(node["kernel"], Mapping):
            out[path] = _frozen(node)
        for k, v in node.items():
            out.update(_frozen_paths(v, path + (k,)))
    return out


def _walk(upd: Any, par: Any, frozen: dict, decay: float, leaf: str, path: tuple = ()) -> Any:
    if not isinstance(upd, Mapping):
        return upd
    out = {}
    for k, v in upd.items():
        if isinstance(v, Mapping):
            out[k] = _walk(v, par[k], frozen, decay, leaf, path + (k,))
            continue
        if k == leaf and decay:
            v = v + decay * par[k]
        flag = frozen.get(path)
        out[k] = v if flag is None else jnp.where(flag, jnp.zeros_like(v), v)
    return out


def freeze_and_decay(decay: float) -> optax.GradientTransformation:
    """ASAP's parameter-side step (Algorithm 1, lines 24-25), on {"params", "feedback"}.

    Adds ``decay * W`` to every kernel update and ``decay * B`` to every feedback update
    (``ΔW = δ h̃ᵀ + λW``, ``ΔB = δ h̃ᵀ + λB`` in gradient convention), and freezes every
    module whose kernel update is exactly zero (ASAP's untrained first layer): its kernel,
    bias and B updates are zeroed and not decayed. Stateless.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("freeze_and_decay needs params (optax.chain passes them)")
        frozen = _frozen_paths(updates.get("params", {}))
        out = dict(updates)
        out["params"] = _walk(updates["params"], params["params"], frozen, decay, "kernel")
        if "feedback" in updates:
            out["feedback"] = _walk(updates["feedback"], params["feedback"], frozen, decay, "B")
        return out, state

    return optax.GradientTransformation(init, update)
