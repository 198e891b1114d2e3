"""Alignment diagnostics for weight-transport rules (ASAP thesis Sec. 2; Akrout et al. Fig. 3).

Two angles per rule-aware layer, in degrees:

- ``update_vs_bp/<layer>``: between the rule's kernel update and the true BP gradient on
  the same variables and batch (every rule; 0 means the rule follows the gradient);
- ``b_vs_w/<layer>``: between the feedback matrix and the forward kernel, where the rule
  has one of the kernel's shape (FA/KP/WM's ``B``; ``sign(W)`` for sign symmetry). DFA's
  D has a different shape and role, so only the update angle is reported for it.

:func:`alignment_angles` works on any batch; :func:`plot_alignment` draws a list of
per-epoch angle dicts to a PNG (matplotlib Agg backend, no display needed).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from alearn._api import rule_updates
from alearn.rules.base import Rule
from alearn.rules.bp import BP
from alearn.rules.sign import SignSymmetry, sign_feedback

Array = jax.Array
UPDATE = "update_vs_bp"
FEEDBACK = "b_vs_w"


def angle(a: Array, b: Array) -> Array:
    """Angle in degrees between two arrays seen as flat vectors (90 if either is zero)."""
    a = jnp.ravel(a).astype(jnp.float32)
    b = jnp.ravel(b).astype(jnp.float32)
    den = jnp.linalg.norm(a) * jnp.linalg.norm(b)
    cos = jnp.where(den > 0, jnp.dot(a, b) / jnp.where(den > 0, den, 1.0), 0.0)
    return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def _name(path: tuple[str, ...]) -> str:
    return "/".join(path[:-1]) or path[-1]


def feedback_angles(rule: Rule, variables: Mapping[str, Any]) -> dict[str, Array]:
    """``b_vs_w/<layer>``: angle between each layer's feedback matrix and its kernel."""
    flat_p = traverse_util.flatten_dict(dict(variables["params"]))
    out = {}
    if isinstance(rule, SignSymmetry):
        for path, w in flat_p.items():
            if path[-1] == "kernel":
                out[f"{FEEDBACK}/{_name(path)}"] = angle(sign_feedback(w, rule.magnitude), w)
        return out
    flat_fb = traverse_util.flatten_dict(dict(variables.get("feedback", {})))
    for path, b in flat_fb.items():
        kpath = path[:-1] + ("kernel",)
        if path[-1] == "B" and kpath in flat_p and flat_p[kpath].shape == b.shape:
            out[f"{FEEDBACK}/{_name(path)}"] = angle(b, flat_p[kpath])
    return out


def _angles(model: nn.Module, rule: Rule, variables: dict, x: Array, y: Array) -> dict:
    upd = traverse_util.flatten_dict(dict(rule_updates(model, rule, variables, x, y)["params"]))
    ref = traverse_util.flatten_dict(dict(rule_updates(model, BP(), variables, x, y)["params"]))
    out = {f"{UPDATE}/{_name(p)}": angle(upd[p], ref[p]) for p in upd if p[-1] == "kernel"}
    out.update(feedback_angles(rule, variables))
    return out


_jitted = jax.jit(_angles, static_argnums=(0, 1))


def alignment_angles(model: nn.Module, rule: Rule, variables: Mapping[str, Any], x: Array,
                     y: Array) -> dict[str, float]:
    """Per-layer alignment angles (degrees) of ``rule`` on batch (x, y); see module doc.

    The BP reference is ``alearn.rule_updates(model, BP(), variables, x, y)`` on the very
    same variables (train-mode statistics are not updated). Jitted, cached per
    (model, rule); returns Python floats keyed ``update_vs_bp/<layer>`` and
    ``b_vs_w/<layer>``.
    """
    try:
        hash((model, rule))
        fn = _jitted
    except TypeError:
        fn = jax.jit(lambda v, a, b: _angles(model, rule, v, a, b))
        return {k: float(v) for k, v in jax.device_get(fn(dict(variables), x, y)).items()}
    return {k: float(v) for k, v in jax.device_get(fn(model, rule, dict(variables), x, y)).items()}


def plot_alignment(history: Sequence[Mapping[str, float]], path: str,
                   title: str | None = None) -> str:
    """Plots angle dicts over training (one entry per epoch) into the PNG ``path``.

    Each entry is a dict as returned by :func:`alignment_angles` (extra keys such as
    ``epoch`` or accuracies are ignored; ``epoch`` gives the x value when present). One
    panel for update-vs-BP angles and, when present, one for B-vs-W angles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("plot_alignment needs a non-empty list of per-epoch angle dicts")
    xs = [h.get("epoch", i) for i, h in enumerate(history)]
    panels = [p for p in (UPDATE, FEEDBACK) if any(k.startswith(p + "/") for h in history
                                                    for k in h)]
    if not panels:
        raise ValueError(f"no '{UPDATE}/...' or '{FEEDBACK}/...' keys in the history entries")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, prefix in zip(axes[0], panels):
        keys = sorted({k for h in history for k in h if k.startswith(prefix + "/")})
        for k in keys:
            ax.plot(xs, [h.get(k, math.nan) for h in history], marker="o", ms=3,
                    label=k[len(prefix) + 1:])
        ax.set_xlabel("epoch")
        ax.set_ylabel("angle (degrees)")
        ax.set_title("update vs BP gradient" if prefix == UPDATE else "feedback B vs W")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
