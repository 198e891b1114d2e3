"""The sharing rules' parameter-side step: freeze the first layer, decay W and B.

ASAP's Algorithm 1, lines 24-25, as an ``optax.GradientTransformation`` on the tree
``{"params": ..., "feedback": ...}`` (used by AS, ASAP, ASFP, ASFP+LC). Two decay scopes
(``SCOPES``): Algorithm 1's kernels and learned B, or the authors' code's every trained
parameter (their ``torch.optim.SGD(net.parameters(), weight_decay=5e-4)`` decays every
parameter that receives a gradient: biases and BatchNorm scale/shift too, never the detached
stem nor the ``requires_grad=False`` feedback of their ``Linear_FA``).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import optax

FROZEN = "frozen"  # feedback marker of the untrained first layer
# decay scope -> what it decays (besides learned B, which both scopes decay)
SCOPES = {
    "kernels": "kernels and learned B (Algorithm 1, lines 24-25)",
    "all": "every trained parameter: kernels, biases, BatchNorm scale/shift, learned B "
           "(the authors' code: torch SGD weight_decay over all parameters)",
}


def _frozen_paths(node: Any, path: tuple = ()) -> set:
    """Module paths whose feedback holds the ``frozen`` marker."""
    out = set()
    if isinstance(node, Mapping):
        if FROZEN in node:
            out.add(path)
        for k, v in node.items():
            out |= _frozen_paths(v, path + (k,))
    return out


def _walk(upd: Any, par: Any, frozen: set, decay: float, leaves: tuple | None,
          path: tuple = ()) -> Any:
    """``leaves``: the leaf names to decay (None: every leaf)."""
    if not isinstance(upd, Mapping):
        return upd
    out = {}
    for k, v in upd.items():
        if isinstance(v, Mapping):
            out[k] = _walk(v, par[k] if par is not None else None, frozen, decay, leaves,
                           path + (k,))
        elif path in frozen:
            out[k] = jnp.zeros_like(v)
        elif decay and (leaves is None or k in leaves):
            out[k] = v + decay * par[k]
        else:
            out[k] = v
    return out


def freeze_and_decay(decay: float, scope: str = "kernels") -> optax.GradientTransformation:
    """ASAP's parameter-side step (Algorithm 1, lines 24-25), on {"params", "feedback"}.

    Zeroes every update (kernel, bias, feedback) of the modules declared frozen (those
    holding a ``feedback/frozen`` marker: the untrained first layer) and adds ``decay ×
    value`` to the updates of the other parameters in ``scope`` (gradient convention,
    ``ΔW = δ h̃ᵀ + λW``): ``"kernels"`` (Algorithm 1) decays every kernel and every learned
    ``B``; ``"all"`` (the authors' code) every entry of ``params`` (kernels, biases,
    BatchNorm scale/shift) and every learned ``B``. Fixed ``B_fixed`` and the marker are
    never decayed. Stateless.
    """
    if scope not in SCOPES:
        raise ValueError(f"decay_scope={scope!r} is not valid; choose one of: "
                         + ", ".join(f"{k} ({v})" for k, v in SCOPES.items()))
    kernel_leaves = None if scope == "all" else ("kernel",)

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if decay and params is None:
            raise ValueError("freeze_and_decay needs params (optax.chain passes them)")
        frozen = _frozen_paths(updates.get("feedback", {}))
        par = params if params is not None else {}
        out = dict(updates)
        out["params"] = _walk(updates["params"], par.get("params"), frozen, decay,
                              kernel_leaves)
        if "feedback" in updates:
            out["feedback"] = _walk(updates["feedback"], par.get("feedback"), frozen, decay,
                                    ("B",))
        return out, state

    return optax.GradientTransformation(init, update)
