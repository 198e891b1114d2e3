"""Alignment diagnostics for weight-transport rules (ASAP thesis Sec. 2; Akrout et al. Fig. 3).

Two angles per rule-aware layer, in degrees:

- ``update_vs_bp/<layer>``: between the rule's kernel update and the true BP gradient on
  the same variables and batch (every rule; 0 means the rule follows the gradient);
- ``b_vs_w/<layer>``: between the feedback matrix and the forward kernel, where the rule
  has one of the kernel's shape (FA/KP/WM's ``B``; ``sign(W)`` for sign symmetry), for the
  layers whose feedback is used: the first layer's B would only carry the error to the
  input, which nothing trains, so it is left out (:func:`unused_feedback_layers` finds such
  layers for any model). DFA's D has a different shape and role, so only the update angle
  is reported for it.

Both the rule's update and the BP reference are gradients of the same loss ``loss_fn(logits,
labels)`` (default :func:`alearn.cross_entropy`, the trainer's loss): pass the loss you train.

:func:`alignment_angles` works on any batch; :func:`plot_alignment` draws a list of
per-epoch angle dicts to a PNG (matplotlib Agg backend, no display needed).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Collection, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from alearn.rules._pairs import KERNEL_NAMES, kernel_path
from alearn._api import cross_entropy, init, trainable
from alearn.rules.base import Rule
from alearn.rules.bp import BP
from alearn.rules.fa import FA
from alearn.rules.sign import SignSymmetry, sign_feedback

Array = jax.Array
LossFn = Callable[[Array, Array], Array]
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


def feedback_angles(rule: Rule, variables: Mapping[str, Any],
                    exclude: Collection[str] = ()) -> dict[str, Array]:
    """``b_vs_w/<layer>``: angle between each layer's feedback matrix and its kernel.

    Layers named in ``exclude`` (e.g. :func:`unused_feedback_layers`) are left out.
    """
    flat_p = traverse_util.flatten_dict(dict(variables["params"]))
    out = {}
    if isinstance(rule, SignSymmetry):
        for path, w in flat_p.items():
            if path[-1] in KERNEL_NAMES and w.ndim >= 2 and _name(path) not in exclude:
                out[f"{FEEDBACK}/{_name(path)}"] = angle(sign_feedback(w, rule.magnitude), w)
        return out
    flat_fb = traverse_util.flatten_dict(dict(variables.get("feedback", {})))
    for path, b in flat_fb.items():
        kpath = kernel_path(flat_p, path) if path[-1] == "B" else None
        if kpath is not None and flat_p[kpath].shape == b.shape and _name(path) not in exclude:
            out[f"{FEEDBACK}/{_name(path)}"] = angle(b, flat_p[kpath])
    return out


def _reports_feedback(rule: Rule, variables: Mapping[str, Any]) -> bool:
    """Whether :func:`feedback_angles` has any angle to report (shapes only, no compute)."""
    if isinstance(rule, SignSymmetry):
        return True
    flat_p = traverse_util.flatten_dict(dict(variables["params"]))
    return any(p[-1] == "B" and kernel_path(flat_p, p) is not None
               and flat_p[kernel_path(flat_p, p)].shape == b.shape
               for p, b in traverse_util.flatten_dict(dict(variables.get("feedback", {}))).items())


def updates_for_loss(model: nn.Module, rule: Rule, variables: Mapping[str, Any], x: Array,
                     y: Array, loss_fn: LossFn = cross_entropy) -> dict:
    """``rule``'s updates (the :func:`alearn.trainable` tree) for ``loss_fn(model(x), y)``.

    As :func:`alearn.rule_updates` (train mode; batch statistics computed, not kept), with
    the loss given instead of softmax cross-entropy.
    """
    variables = dict(variables)
    train_vars = trainable(rule, variables)
    rest = {k: v for k, v in variables.items() if k not in train_vars}
    mutable = [k for k in rest if k != "feedback"] or False

    def loss(tv):
        out = model.apply({**rest, **tv}, x, rule=rule, train=True, mutable=mutable)
        return loss_fn(out[0] if mutable else out, y)

    return jax.grad(loss)(train_vars)


def _angles(model: nn.Module, rule: Rule, loss_fn: LossFn, exclude: frozenset, variables: dict,
            x: Array, y: Array) -> dict:
    upd = traverse_util.flatten_dict(dict(updates_for_loss(model, rule, variables, x, y,
                                                           loss_fn)["params"]))
    ref = traverse_util.flatten_dict(dict(updates_for_loss(model, BP(), variables, x, y,
                                                           loss_fn)["params"]))
    out = {f"{UPDATE}/{_name(p)}": angle(upd[p], ref[p]) for p in upd
           if p[-1] in KERNEL_NAMES and upd[p].ndim >= 2}
    out.update(feedback_angles(rule, variables, exclude))
    return out


_jitted = jax.jit(_angles, static_argnums=(0, 1, 2, 3))
_unused_cache: dict = {}


def unused_feedback_layers(model: nn.Module, variables: Mapping[str, Any], x: Array,
                           y: Array) -> frozenset[str]:
    """Layers whose feedback matrix reaches no parameter update, e.g. the first layer.

    A property of the model's wiring, found with FA feedback (``B`` of every kernel's shape,
    the path sign symmetry, KP and WM also use): layer l's B only carries the error to
    layer l's input, so l's B is unused when replacing it leaves every ``params`` update
    bit-for-bit unchanged. Evaluated on two random inputs of ``x``'s shape (``variables``
    gives the weights), one update evaluation per layer; cached per (model, input shape) when
    the model is hashable.
    """
    try:
        key = (model, tuple(x.shape[1:]), str(x.dtype))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _unused_cache:
        return _unused_cache[key]
    # Wiring, not data: two random examples (real ones could leave a path at exactly zero).
    x = jax.random.normal(jax.random.key(1), (2, *x.shape[1:]), jnp.float32).astype(x.dtype)
    y = jnp.asarray(y)[:1].repeat(2, axis=0)
    fa = FA()
    fb = init(model, fa, jax.random.key(0), x).get("feedback", {})
    flat = traverse_util.flatten_dict(dict(fb))
    base = {k: v for k, v in dict(variables).items() if k != "feedback"}
    upd = jax.jit(lambda f: updates_for_loss(model, fa, {**base, "feedback": f}, x, y)["params"])
    ref = jax.device_get(upd(fb))
    unused = set()
    for path, b in flat.items():
        if path[-1] != "B":
            continue
        other = traverse_util.unflatten_dict({**flat, path: 2.0 * b + 1.0})
        got = jax.device_get(upd(other))
        if all(bool((a == r).all()) for a, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref))):
            unused.add(_name(path))
    out = frozenset(unused)
    if key is not None:
        _unused_cache[key] = out
    return out


def alignment_angles(model: nn.Module, rule: Rule, variables: Mapping[str, Any], x: Array,
                     y: Array, loss_fn: LossFn = cross_entropy,
                     skip_unused: bool = True) -> dict[str, float]:
    """Per-layer alignment angles (degrees) of ``rule`` on batch (x, y); see module doc.

    The BP reference is BP's update for the same ``loss_fn`` on the very same variables
    (train-mode statistics are not updated). With ``skip_unused`` the ``b_vs_w`` angle of
    layers whose feedback is never used (:func:`unused_feedback_layers`) is left out.
    Jitted, cached per (model, rule, loss_fn); returns Python floats keyed
    ``update_vs_bp/<layer>`` and ``b_vs_w/<layer>``.
    """
    exclude = (unused_feedback_layers(model, variables, x, y)
               if skip_unused and _reports_feedback(rule, variables) else frozenset())
    try:
        hash((model, rule, loss_fn))
        fn = _jitted
    except TypeError:
        fn = jax.jit(lambda v, a, b: _angles(model, rule, loss_fn, exclude, v, a, b))
        return {k: float(v) for k, v in jax.device_get(fn(dict(variables), x, y)).items()}
    return {k: float(v) for k, v in
            jax.device_get(fn(model, rule, loss_fn, exclude, dict(variables), x, y)).items()}


def plot_alignment(history: Sequence[Mapping[str, float]], path: str,
                   title: str | None = None, x: str = "epoch") -> str:
    """Plots angle dicts over training (one entry per epoch, or per logged step) to ``path``.

    Each entry is a dict as returned by :func:`alignment_angles` (extra keys such as
    ``epoch`` or accuracies are ignored; the key ``x`` -- ``"epoch"`` or ``"step"`` -- gives
    the x value when present). One panel for update-vs-BP angles and, when present, one for
    B-vs-W angles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("plot_alignment needs a non-empty list of per-epoch angle dicts")
    xs = [h.get(x, i) for i, h in enumerate(history)]
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
        ax.set_xlabel(x)
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
