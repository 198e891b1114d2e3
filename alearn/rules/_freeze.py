"""The sharing rules' parameter-side step: freeze the first layer, decay W and B.

ASAP's Algorithm 1, lines 24-25, as an ``optax.GradientTransformation`` on the tree
``{"params": ..., "feedback": ...}`` (used by AS, ASAP, ASFP, ASFP+LC).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import optax

FROZEN = "frozen"  # feedback marker of the untrained first layer


def _frozen_paths(node: Any, path: tuple = ()) -> set:
    """Module paths whose feedback holds the ``frozen`` marker."""
    out = set()
    if isinstance(node, Mapping):
        if FROZEN in node:
            out.add(path)
        for k, v in node.items():
            out |= _frozen_paths(v, path + (k,))
    return out


def _walk(upd: Any, par: Any, frozen: set, decay: float, leaf: str, path: tuple = ()) -> Any:
    if not isinstance(upd, Mapping):
        return upd
    out = {}
    for k, v in upd.items():
        if isinstance(v, Mapping):
            out[k] = _walk(v, par[k] if par is not None else None, frozen, decay, leaf,
                           path + (k,))
        elif path in frozen:
            out[k] = jnp.zeros_like(v)
        elif k == leaf and decay:
            out[k] = v + decay * par[k]
        else:
            out[k] = v
    return out


def freeze_and_decay(decay: float) -> optax.GradientTransformation:
    """ASAP's parameter-side step (Algorithm 1, lines 24-25), on {"params", "feedback"}.

    Zeroes every update (kernel, bias, feedback) of the modules declared frozen (those
    holding a ``feedback/frozen`` marker: the untrained first layer), adds ``decay * W`` to
    every other kernel update and ``decay * B`` to every learned ``B`` update (``ΔW = δ h̃ᵀ
    + λW``, ``ΔB = δ h̃ᵀ + λB`` in gradient convention). Fixed ``B_fixed`` is left alone.
    Stateless.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if decay and params is None:
            raise ValueError("freeze_and_decay needs params (optax.chain passes them)")
        frozen = _frozen_paths(updates.get("feedback", {}))
        par = params if params is not None else {}
        out = dict(updates)
        out["params"] = _walk(updates["params"], par.get("params"), frozen, decay, "kernel")
        if "feedback" in updates:
            out["feedback"] = _walk(updates["feedback"], par.get("feedback"), frozen, decay,
                                    "B")
        return out, state

    return optax.GradientTransformation(init, update)
