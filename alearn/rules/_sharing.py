"""Shared-activation bookkeeping for AS, ASAP, ASFP and ASFP+LC (ASAP thesis Ch. 4).

Every rule-aware layer gets one of three roles, decided in the forward pass:

- **frozen**: the first rule-aware layer (input = data) is not trained ("input of the first
  layer has considerably smaller dimension ... can't be shared activation", Sec. 5.1.1;
  the authors' code detaches the stem). It is *declared* frozen by position: it owns a
  one-element ``feedback/frozen`` marker instead of feedback weights, and the rule's
  transform (:func:`freeze_and_decay`) zeroes every update of a module holding that
  marker (kernel, bias, B; no decay). A layer whose kernel update happens to be zero (a
  dead ReLU below it) is *not* frozen. AS with ``grouping="block_input"`` trains the first
  layer with its own input instead (so AS with k = 1 is exactly BP).
- **dense FA** (``dense="fa"``, the authors' code): a dense layer trains by plain feedback
  alignment: own input, fixed random ``feedback/B_fixed`` (uniform(-1, 1), the code's
  default; ``dense_feedback_init`` draws it from another ``_feedback_init.INITS`` family,
  e.g. ``"he_normal"`` like FA's B, for the issue 26 ablation), never updated. Other
  ``dense`` choices: ``"own_input"`` (dense layers keep their own input and get the rule's
  own update, e.g. ASAP's ``ΔW = ΔB = δ xᵀ``) and ``"shared"`` (dense layers take part in
  the counted groups as every layer in the thesis' description).
- **sharing**: the layer forms its update from a shared activation (see ``GROUPINGS``).

Groupings (``grouping``):

- ``"authors_code"`` (default): the authors' released code. Residual nets (models that
  call ``tape.block(x)`` at every block input): a block's layers that read the block input
  (conv1 and the projection shortcut) use the *previous* block's shared activation (block
  0: its own input, the stem output); the other layers (conv2) use *this* block's. A block
  takes its input as a new shared activation every ``k // 2`` blocks (k = 2: every block,
  k = 4: every other block, counted over the whole net), otherwise it passes the previous
  one on; ``k`` must be even there. Plain chains (no marks: MLP, AlexNet): from layer 1 on,
  every ``k`` consecutive conv layers share the input of the group's first layer (AlexNet
  k = 2: conv1 and conv2 both use conv0's pooled output).
- ``"block_input"`` (alearn's first reading): every layer of a residual block uses that
  block's input (a mark takes its input as the new shared activation once >= k layers used
  the current one), so conv1's update is exact; plain chains are counted as above.

With ``dense="shared"``, counted groups run over dense layers too, and a dense layer whose
shared activation is a conv map that does not flatten exactly to its input starts a new
group with its own input.

Token activations (batch, positions..., features), e.g. a Transformer's (B, T, d): a
position-wise layer (``op.in_feature_ndim``: Dense, DenseGeneral, Einsum over x's
trailing axes) is matched over its *features*, its position axes kept as they are
(``dimension_matching``). Several feature axes (an attention out-projection's
(B, T, heads, head_dim) input) are flattened into one, so the shared activation is stored
as (B, T, heads * head_dim). A layer whose input cannot be matched from the current
shared activation (other position axes, e.g. after a sequence pooling or a patch merge;
a token activation for a conv input) starts a new group with its own input; under
``grouping="authors_code"`` on a marked net, such a layer uses its own input (exact BP
update) and the groups are left as they are. Residual token nets (blocks marked with
``tape.block``) are grouped as residual conv nets: every non-vector layer counts as a
block's "conv".

The shared activation is stored once in ``tape.state`` and the same traced array is
handed to every layer that uses it, so the compiled step keeps one copy; the layer's real
input is not a residual of ASAP (the memory saving of Ch. 6).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from alearn._layers.ops import LinearOp
from alearn.rules import _checks, _feedback_init
from alearn.rules import dimension_matching as dm
from alearn.rules._freeze import FROZEN, SCOPES, freeze_and_decay
from alearn.rules.base import Rule

Array = jax.Array

GROUPINGS = {
    "authors_code": "conv1/shortcut use the previous block's input, conv2 this block's",
    "block_input": "every layer of a residual block uses that block's input",
}
DENSE = {
    "fa": "own input, fixed random B (plain feedback alignment)",
    "own_input": "own input, the rule's own update",
    "shared": "dense layers take part in the counted groups",
}
B_FIXED = "B_fixed"  # fixed feedback of dense FA layers

_SHARED, _SINCE, _MARKED = "as/shared", "as/since", "as/marked"
_PREV, _BLOCK_X, _BLOCKS, _NEW = "as/previous", "as/block_x", "as/blocks", "as/new"
# k bookkeeping (for the check that k can apply, :meth:`SharingRule.on_close`):
# _OWN0: the current group is AS's layer-0 own group (its end does not depend on k);
# _MAX_GROUP: the largest counted group so far; _MAX_MARK: the largest group size seen at a
# block mark (``block_input``).
_OWN0, _MAX_GROUP, _MAX_MARK = "as/own0", "as/max_group", "as/max_mark"


def _choice(rule: str, field: str, value: Any, valid: Mapping) -> None:
    if value not in valid:
        raise ValueError(f"rule {rule!r}: {field}={value!r} is not valid; choose one of: "
                         + ", ".join(f"{k} ({v})" for k, v in valid.items()))


def features_shape(op: LinearOp) -> tuple[int, ...]:
    """The layer input's shape with its feature axes flattened into one (the last):
    (B, T, heads, head_dim) -> (B, T, heads * head_dim) for a position-wise op contracting
    x's last two axes; any other op's input shape unchanged."""
    shape, f = tuple(op.in_shape), op.in_feature_ndim
    if not f or f == 1 or f >= len(shape):
        return shape
    return shape[:-f] + (math.prod(shape[-f:]),)


def _model_name() -> str:
    """The class name of the outermost Flax Linen module being applied (the model whose
    trace is finishing; ``alearn.wrap`` applies the user's model itself), for error
    messages; "this model" outside Linen (NNX)."""
    try:
        from flax.linen.module import _context  # pylint: disable=import-outside-toplevel
        stack = [m for m in _context.module_stack if isinstance(m, nn.Module)]
    except (ImportError, AttributeError):
        return "this model"
    return type(stack[0]).__name__ if stack else "this model"


def _fits(shared: Array, target: tuple[int, ...]) -> bool:
    """Whether ``shared`` may stand for an input of shape ``target`` in a group: a map or
    token activation feeds a vector layer only by exact flattening; else whatever
    :func:`dimension_matching.matchable` accepts (same positions for tokens)."""
    if len(target) == 2 and shared.ndim > 2:
        return math.prod(shared.shape[1:]) == target[1]
    return dm.matchable(tuple(shared.shape), target)


@dataclasses.dataclass(frozen=True)
class SharingRule(Rule):
    """Common fields and bookkeeping of the activation-sharing rules (private base).

    Attributes:
      k: block size (layers per sharing group), >= 1 (even for ``authors_code`` on
        residual nets).
      match: dimension-matching method 1, 2 or 3 (``dimension_matching``).
      seed: seed of method 3's fixed random projections (folded with the layer index).
      grouping: ``"authors_code"`` or ``"block_input"`` (module docstring).
      dense: how dense layers train: ``"fa"``, ``"own_input"`` or ``"shared"``.
      decay: λ of the rule's own weight decay (``freeze_and_decay``; 0 for AS, 5e-4 for
        ASAP/ASFP). The rule decays, not the base optimizer, so that the frozen first
        layer stays exactly unchanged (a base decay would shrink it).
      decay_scope: ``"kernels"`` (Algorithm 1: kernels and learned B; default) or
        ``"all"`` (the authors' code: every trained parameter, biases and BatchNorm
        scale/shift included; the Table configs ``asap.py`` use it).
      dense_feedback_init: initialiser of the dense FA layers' fixed ``B_fixed``
        (``"uniform_unit"``: U(-1, 1), the authors' code; any ``_feedback_init.INITS``).

    A ``k`` that cannot apply to the model (its grouping would be that of a smaller k:
    e.g. k=4 on the AlexNet, whose only group is conv1 + conv2) fails when the model is
    traced, naming the model, k and the values that apply (:meth:`on_close`); k = 1 and
    the default 2 are always accepted.
    """

    dense_choices: ClassVar[tuple[str, ...]] = ("fa", "own_input", "shared")

    k: int = 2
    match: int = 1
    seed: int = 0
    grouping: str = "authors_code"
    dense: str = "fa"
    decay: float = 0.0
    decay_scope: str = "kernels"
    dense_feedback_init: str = "uniform_unit"

    def __post_init__(self):
        _checks.positive_int(self.name, "k", self.k)
        dm.validate(self.name, self.match)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"rule {self.name!r}: seed={self.seed!r} must be an integer")
        _choice(self.name, "grouping", self.grouping, GROUPINGS)
        _choice(self.name, "dense", self.dense, {d: DENSE[d] for d in self.dense_choices})
        _checks.non_negative(self.name, "decay", self.decay)
        _choice(self.name, "decay_scope", self.decay_scope, SCOPES)
        _checks.choice(self.name, "dense_feedback_init", self.dense_feedback_init,
                       _feedback_init.INITS)

    # --- roles ---------------------------------------------------------------------------
    def freezes_first(self) -> bool:
        """Whether the first rule-aware layer is declared frozen (ASAP/ASFP: unless
        ``freeze_first=False``)."""
        return True

    def role(self, tape: Any, op: LinearOp) -> str:
        """"frozen", "fa" (dense FA) or "sharing" for the layer about to run."""
        if tape.layer_index == 0 and not tape.state.get(_MARKED) and self.freezes_first():
            return "frozen"
        if len(features_shape(op)) == 2 and self.dense == "fa":
            return "fa"
        return "sharing"

    def layer_feedback_names(self, tape: Any, op: LinearOp) -> tuple[str, ...]:
        role = self.role(tape, op)
        if role == "frozen":
            return (FROZEN,)
        if role == "fa":
            return (B_FIXED,)
        return self.feedback_names

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        if name == FROZEN:
            return jnp.zeros((1,), op.dtype)  # orbax cannot save zero-size arrays
        if name == B_FIXED and self.dense_feedback_init == "uniform_unit":
            # the authors' Linear_FA: weight_fa.uniform_(-1, 1)
            return jax.random.uniform(key, op.kernel_shape, op.dtype, -1.0, 1.0)
        if name == B_FIXED:
            return _feedback_init.draw_like(key, op, self.dense_feedback_init, 1.0)
        return super().init_feedback(name, key, op, num_classes)

    # --- forward bookkeeping -------------------------------------------------------------
    def _take(self, st: dict, x: Array) -> None:
        """``x`` becomes the current shared activation (a new group starts)."""
        st[_SHARED], st[_SINCE] = x, 0
        st[_NEW] = x
        st[_OWN0] = False

    def on_block(self, tape: Any, x: Array) -> None:
        st = tape.state
        st[_MARKED] = True
        if self.grouping == "block_input":
            if _SHARED in st and not st.get(_OWN0):
                st[_MAX_MARK] = max(st.get(_MAX_MARK, 0), st[_SINCE])
            if _SHARED not in st or st.get(_SINCE, self.k) >= self.k:
                self._take(st, x)
            return
        if self.k % 2:
            raise ValueError(f"rule {self.name!r}: grouping='authors_code' on a residual net "
                             f"needs an even k (two convs per block), got k={self.k}")
        m = st.get(_BLOCKS, 0)
        st[_BLOCKS] = m + 1
        st[_BLOCK_X] = x
        if m == 0 or _SHARED not in st:
            st[_PREV] = x  # block 0: the stem output is its own "previous" activation
            self._take(st, x)
            return
        st[_PREV] = st[_SHARED]
        if m % (self.k // 2) == 0:
            self._take(st, x)

    def shared_for(self, tape: Any, x: Array, op: LinearOp | None = None) -> Array:
        """The (unmatched) shared activation a sharing-role layer with input ``x`` uses.

        Token inputs with several feature axes come back with them flattened into one
        (:func:`features_shape`); a layer's own input is stored that way too.
        """
        st = tape.state
        shape = features_shape(op) if op is not None else tuple(x.shape)
        xf = x if tuple(x.shape) == shape else x.reshape(shape)
        if tape.layer_index == 0 and not st.get(_MARKED, False):
            st[_SHARED], st[_SINCE] = xf, self.k  # layer 0 is its own group
            st[_OWN0] = True
            st[_MAX_GROUP] = max(st.get(_MAX_GROUP, 0), 1)
            return xf
        if len(shape) == 2 and self.dense != "shared":
            return xf
        if st.get(_MARKED) and self.grouping == "authors_code" and len(shape) > 2:
            shared = st[_PREV] if x is st.get(_BLOCK_X) else st[_SHARED]
            return shared if _fits(shared, shape) else xf
        shared = st.get(_SHARED)
        if (shared is None or not _fits(shared, shape)
                or (not st.get(_MARKED, False) and st[_SINCE] >= self.k)):
            self._take(st, xf)
        st[_SINCE] += 1
        if not st.get(_OWN0):
            st[_MAX_GROUP] = max(st.get(_MAX_GROUP, 0), st[_SINCE])
        return st[_SHARED]

    # --- the check that k can apply --------------------------------------------------------
    def k_limit(self, tape: Any) -> tuple[int, str]:
        """(the largest k that changes this model's grouping, what the valid values are),
        from the bookkeeping of a finished trace.

        Every k above the limit groups the layers exactly as the limit does: on a plain
        chain the largest group never reaches k (groups end at the net's end or where a
        shared activation cannot be matched); under ``authors_code`` on a residual net a new
        shared activation every k/2 blocks is never taken after block 0 once k/2 reaches
        the number of blocks; under ``block_input`` no block mark sees k layers on the
        current activation.
        """
        st = tape.state
        if st.get(_MARKED) and self.grouping == "authors_code":
            blocks = st.get(_BLOCKS, 0)
            return 2 * blocks, (f"even k from 2 to {2 * blocks} (a new shared activation "
                                f"every k/2 of its {blocks} blocks)")
        if st.get(_MARKED):
            limit = st.get(_MAX_MARK, 0) + 1
            return limit, f"k from 1 to {limit}"
        limit = st.get(_MAX_GROUP, 0)
        if limit == 0:
            return 0, (f"none: no layer forms its update from a shared activation under "
                       f"dense={self.dense!r} (dense='shared' lets dense layers share); "
                       "keep the default k=2")
        return limit, (f"k from 1 to {limit} (its largest group of layers that can share "
                       f"one activation has {limit})")

    def on_close(self, tape: Any) -> None:
        """Raises when ``k`` cannot apply to the model just traced (see :meth:`k_limit`)."""
        if self.k <= 2:
            return
        limit, valid = self.k_limit(tape)
        if self.k > limit:
            same = (f"it would train exactly as k={limit}" if limit else "k has no effect")
            model = getattr(tape, "model_name", None) or _model_name()
            raise ValueError(
                f"rule {self.name!r}: k={self.k} cannot apply to {model} "
                f"(grouping={self.grouping!r}, dense={self.dense!r}): {same}; valid: {valid}")

    def context(self, tape: Any, x: Array, op: LinearOp) -> Any:
        if self.role(tape, op) != "sharing":
            return None
        shared = self.shared_for(tape, x, op)
        target = features_shape(op)
        proj = None
        if self.match == 3 and tuple(shared.shape) != target:
            key = jax.random.fold_in(jax.random.key(self.seed), tape.layer_index)
            proj = dm.projection(key, shared.shape, target, op.dtype)
        return (shared, proj)

    def matched(self, op: LinearOp, ctx: Any) -> Array:
        """The shared activation brought to the layer input's shape (in the backward pass)."""
        shared, proj = ctx
        target = features_shape(op)
        return dm.match(shared, target, self.match, proj).reshape(op.in_shape)

    @staticmethod
    def frozen_backward(op: LinearOp, g: Array) -> tuple:
        """Nothing passes the untrained first layer (the authors' code detaches it)."""
        return (jnp.zeros(op.in_shape, g.dtype), jnp.zeros(op.kernel_shape, g.dtype),
                {FROZEN: jnp.zeros((1,), g.dtype)})

    @staticmethod
    def fa_backward(op: LinearOp, x: Array, b: Array, g: Array) -> tuple:
        """Plain FA for a dense layer: ``dx = g Bᵀ``, ``ΔW = xᵀ g``, B fixed."""
        return op.input_grad(g, b), op.weight_grad(x, g), {B_FIXED: jnp.zeros_like(b)}

    def transform(self) -> optax.GradientTransformation:
        return freeze_and_decay(self.decay, self.decay_scope)


@dataclasses.dataclass(frozen=True)
class AsymmetricSharingRule(SharingRule):
    """Sharing rules with a learned feedback matrix B (ASAP, ASFP) and decay λ."""

    feedback_names: ClassVar[tuple[str, ...]] = ("B",)
    trains_feedback: ClassVar[bool] = True

    decay: float = 5e-4
    feedback_init: str = "he_normal"
    feedback_scale: float = 1.0
    freeze_first: bool = True  # False: the first layer trains with its own input (ablation)

    def __post_init__(self):
        super().__post_init__()
        _feedback_init.validate(self.name, self.feedback_init, self.feedback_scale)
        if not isinstance(self.freeze_first, bool):
            raise ValueError(f"rule {self.name!r}: freeze_first={self.freeze_first!r} must be "
                             "True or False")

    def freezes_first(self) -> bool:
        """Sec. 5.1.1 / the authors' code freeze the first layer; ``freeze_first=False``
        trains it with its own input (the rule's update, learned B), for ablations."""
        return self.freeze_first

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        if name != "B":
            return super().init_feedback(name, key, op, num_classes)
        return _feedback_init.draw_like(key, op, self.feedback_init, self.feedback_scale)

