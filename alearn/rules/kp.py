"""Modified Kolen–Pollack (Akrout et al. 2019; ASAP thesis eq. 2.7, Sec. 4.2.1)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from alearn._layers.ops import LinearOp
from alearn.rules import _checks
from alearn.rules._pairs import kernel_path
from alearn.rules.fa import FA

Array = jax.Array


class KPDecayState(NamedTuple):
    """Stateless transformation (kept as a NamedTuple for the house convention)."""


def kp_decay(weight_decay: float, decay_kernel: bool = False) -> optax.GradientTransformation:
    """Adds ``λ B`` to feedback updates and (optionally) ``λ W`` to the matching kernels.

    Applied to the tree ``{"params": ..., "feedback": ...}`` (``alearn.trainable``).
    A kernel decays only if its layer owns a feedback ``B`` (the pair of eq. 2.7); biases
    and other parameters are left to the base optimizer's weight decay. With identical
    updates for W and B (``KP.backward``) and lr η, ``W − B`` shrinks by ``(1 − ηλ)`` per
    SGD step (Kolen–Pollack theorem, thesis Sec. 4.2.1).

    Args:
      weight_decay: λ >= 0.
      decay_kernel: also decay the paired kernels. Leave False when the base optimizer
        applies the weight decay λ to the params (the papers' SGD; W would decay twice);
        set True with a base optimizer without weight decay.
    """

    def init_fn(params):
        del params
        return KPDecayState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("kp_decay needs params: call update(updates, state, params)")
        if "feedback" not in updates or weight_decay == 0:
            return updates, state
        new = dict(updates)
        new["feedback"] = jax.tree_util.tree_map(
            lambda u, b: u + weight_decay * b, updates["feedback"], params["feedback"])
        if decay_kernel:
            fb = traverse_util.flatten_dict(params["feedback"])
            flat_u = traverse_util.flatten_dict(updates["params"])
            flat_p = traverse_util.flatten_dict(params["params"])
            for b_path in fb:
                path = kernel_path(flat_p, b_path) if b_path[-1] == "B" else None
                if path is not None:
                    flat_u[path] = flat_u[path] + weight_decay * flat_p[path]
            new["params"] = traverse_util.unflatten_dict(flat_u)
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class KP(FA):
    """Kolen–Pollack: FA's feedback path, and B receives exactly W's update.

    ``ΔB_l = ΔW_l = −η δ_l h_{l-1}ᵀ`` (eq. 2.7) plus weight decay λ on both, so
    ``W − B = (1 − ηλ)^t (W_0 − B_0) → 0``. By default :meth:`transform`
    (:func:`kp_decay`) decays B only and W's decay is the base optimizer's weight decay λ
    (the papers' setup: SGD weight decay 5e-4 on every forward parameter); with a base
    optimizer without weight decay set ``decay_kernel=True``. The trainer rejects the
    combinations that decay W or B twice, W and B by different amounts, or through Adam's
    rescaling (:meth:`check_base_weight_decay`, mask- and optimizer-aware, naming config
    flags that fix it); ``alearn.train.create_rule_optimizer`` checks any optax base the
    same way at ``init`` (:meth:`check_optimizer`). With SGD the trainer's optimizer
    (``optimizer_from_config``) applies B's update in W's pass, without a momentum buffer
    for B (:mod:`alearn.train.kp_sgd`, equal up to float32 rounding).

    Attributes:
      weight_decay: λ (paper: 5e-4, the global weight decay of Sec. 5.1).
      decay_kernel: whether ``transform`` also decays the kernels (default False: the base
        optimizer does; see :func:`kp_decay`).
    """

    name = "kp"
    trains_feedback = True

    weight_decay: float = 5e-4
    decay_kernel: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.paper_code_fa_conv:
            raise ValueError("rule 'kp': paper_code_fa_conv=True is a switch of rule 'fa' only "
                             "(the authors' FA conv aliasing); KP trains its own B")
        _checks.non_negative(self.name, "weight_decay", self.weight_decay)
        if not isinstance(self.decay_kernel, bool):
            raise ValueError(f"rule 'kp': decay_kernel={self.decay_kernel!r} must be a bool")

    def backward(self, op: LinearOp, res: Any, g: Array, carrier_g: Array | None):
        x, b = res
        del carrier_g
        dw = op.weight_grad(x, g)
        return op.input_grad(g, b), dw, {"B": dw}

    def transform(self) -> optax.GradientTransformation:
        return kp_decay(self.weight_decay, self.decay_kernel)

    def check_base_weight_decay(self, weight_decay: float,
                                weight_decay_mask: str | bool = "params",
                                optimizer: str = "sgd") -> None:
        """Checks KP against the trainer's base optimizer (``alearn.train.create_optimizer``
        names): ``optimizer`` with weight decay ``weight_decay`` on the leaves that
        ``weight_decay_mask`` selects. Accepted only where W − B shrinks by exactly
        ``(1 − ηλ)`` per step (:func:`decay_problem`); the error names config flags that fix
        it, each checked to pass. A bool ``weight_decay_mask`` (the old signature's
        ``decays_feedback``) means ``"all"`` / ``"params"``.

        Raises:
          ValueError: W or B would decay twice, W and B by different amounts, or through an
            optimizer that rescales the decay (Adam).
        """
        if isinstance(weight_decay_mask, bool):
            weight_decay_mask = "all" if weight_decay_mask else "params"
        setting = {"optimizer": str(optimizer).lower(), "weight_decay": float(weight_decay),
                   "weight_decay_mask": str(weight_decay_mask).lower(),
                   "rule_hparams.weight_decay": float(self.weight_decay),
                   "rule_hparams.decay_kernel": bool(self.decay_kernel)}
        problem = decay_problem(setting)
        if problem is None:
            return
        fixes = decay_fixes(setting)
        how = "; or ".join(" ".join(f"--config.{k}={v}" for k, v in fix.items()) for fix in fixes)
        raise ValueError(f"rule 'kp': {problem}, so W − B does not shrink by (1 − ηλ) per step "
                         f"(Kolen–Pollack, Sec. 4.2.1). Fix: {how}")

    def check_optimizer(self, tx: optax.GradientTransformation, params: Any) -> None:
        """Checks the whole optimizer ``tx`` over ``alearn.trainable`` (``{"params",
        "feedback"}``) on concrete ``params``: one update with a zero gradient must shrink
        every paired kernel W and its B by the same factor (KP's decay acts on W − B), so a
        base optimizer that decays W twice, W but not B, or rescales the decay (Adam's L2)
        is refused, whatever optax chain it is. Tracers (``jax.jit``/``eval_shape`` of
        ``init``) are skipped. :func:`alearn.train.create_rule_optimizer` calls it at
        ``init``.

        Raises:
          ValueError: naming the first uneven layer and how to pair the decay.
        """
        if "feedback" not in params or any(isinstance(x, jax.core.Tracer)
                                           for x in jax.tree_util.tree_leaves(params)):
            return
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        updates, _ = tx.update(zeros, tx.init(params), params)
        flat_p = traverse_util.flatten_dict(params["params"])
        flat_u = traverse_util.flatten_dict(updates["params"])
        flat_b = traverse_util.flatten_dict(params["feedback"])
        flat_ub = traverse_util.flatten_dict(updates.get("feedback", {}))
        for b_path, b in flat_b.items():
            w_path = kernel_path(flat_p, b_path) if b_path[-1] == "B" else None
            if w_path is None or b_path not in flat_ub:
                continue
            kw, kb = _shrink(flat_u[w_path], flat_p[w_path]), _shrink(flat_ub[b_path], b)
            if kw is not None and kb is not None and abs(kw - kb) <= 1e-5 * max(kw, kb, 1e-30):
                continue
            where = "/".join(map(str, w_path))
            what = ("the optimizer rescales the decay of " + ("W" if kw is None else "B")
                    + " per weight (Adam-style), not by one factor" if kw is None or kb is None
                    else f"one step shrinks W by a factor 1 − {kw:.3g} but B by 1 − {kb:.3g}")
            raise ValueError(
                f"rule 'kp' with this optimizer: at {where}, {what}, so W − B does not shrink "
                "by (1 − ηλ) per step. Pair the decay: create('kp', decay_kernel=False, "
                "weight_decay=λ) with create_optimizer('sgd', ..., weight_decay=λ); or "
                "create('kp', decay_kernel=True, weight_decay=λ) with a base optimizer "
                "without weight decay (optax.sgd); or create('kp', weight_decay=0.0) with "
                "create_optimizer('adamw' or 'sgd', ..., weight_decay=λ, "
                "weight_decay_mask='all')")


def _shrink(update: Array, weight: Array) -> float | None:
    """k with ``update == −k · weight`` (one step's decay factor 1 − k), None if the update is
    not a multiple of the weight (a rescaled decay)."""
    u, w = np.asarray(update, np.float64).ravel(), np.asarray(weight, np.float64).ravel()
    ww = float(w @ w)
    if not np.any(u):
        return 0.0
    if ww == 0.0:
        return None
    k = -float(u @ w) / ww
    return k if np.linalg.norm(u + k * w) <= 1e-4 * np.linalg.norm(u) else None


#: ``create_optimizer`` names whose moment estimates rescale what enters the gradient.
ADAPTIVE = ("adam", "adamw")
#: The layer kinds a weight-decay mask can treat differently (``conv_kernels``).
_KINDS = ("dense", "conv")


def _base_decays_kernel(mask: str, kind: str) -> bool:
    return mask in ("params", "kernels", "all") or (mask == "conv_kernels" and kind == "conv")


def decay_problem(setting: dict) -> str | None:
    """Why KP's W − B would not shrink by ``(1 − ηλ)`` per step under ``setting``, or None.

    ``setting``: ``optimizer`` (sgd / adam / adamw), ``weight_decay`` (λ_o) and
    ``weight_decay_mask`` of the base optimizer, ``rule_hparams.weight_decay`` (λ_r) and
    ``rule_hparams.decay_kernel``. KP's transform adds λ_r B (and λ_r W) to the gradient;
    the base adds λ_o to the gradient of the masked leaves (sgd, adam) or decays them after
    Adam's rescaling (adamw, decoupled). With W's and B's gradients equal (eq. 2.7),
    ``D = W − B`` follows ``D' = (1 − ηλ) D`` (plus momentum, linear) iff, for dense and
    conv layers alike, W and B get the same decay, and none of it passes through Adam's
    per-weight rescaling (which acts on W and B separately: with a zero gradient it moves
    each weight by ~η sign(w), and D does not shrink where W and B share a sign).
    """
    opt, mask = setting["optimizer"], setting["weight_decay_mask"]
    lam_o, lam_r = float(setting["weight_decay"]), float(setting["rule_hparams.weight_decay"])
    decay_kernel = bool(setting["rule_hparams.decay_kernel"])
    decoupled = opt == "adamw"
    coupled_b = lam_r + (lam_o if mask == "all" and not decoupled else 0.0)
    for kind in _KINDS:
        base_w = lam_o if _base_decays_kernel(mask, kind) else 0.0
        coupled_w = (lam_r if decay_kernel else 0.0) + (0.0 if decoupled else base_w)
        if opt in ADAPTIVE and (coupled_w > 0 or coupled_b > 0):
            parts = ([f"rule_hparams.weight_decay={lam_r:g}"] if lam_r > 0 else []) + (
                [f"weight_decay={lam_o:g} as L2"] if not decoupled and lam_o > 0 else [])
            return (f"optimizer {opt!r} rescales per weight the decay added to the gradient "
                    f"({', '.join(parts)})")
        w = coupled_w + (base_w if decoupled else 0.0)
        b = coupled_b + (lam_o if decoupled and mask == "all" else 0.0)
        if abs(w - b) <= 1e-12 * max(1.0, w, b):
            continue
        if decay_kernel and lam_r > 0 and base_w > 0:
            return (f"decay_kernel=True and the optimizer's weight_decay={lam_o:g} decay W "
                    "twice")
        if mask == "all" and lam_r > 0 and lam_o > 0:
            return (f"rule weight_decay={lam_r:g} and the optimizer's weight_decay={lam_o:g} on "
                    "all parameters (weight_decay_mask='all') decay B twice")
        which = (f"W of {kind} layers (weight_decay_mask='conv_kernels' decays conv kernels "
                 "only)" if mask == "conv_kernels" else "W")
        how = " (decoupled, AdamW)" if decoupled else ""
        return (f"{which} decays with λ={w:g} but B with λ={b:g}{how} (optimizer "
                f"weight_decay={lam_o:g}, rule weight_decay={lam_r:g}, "
                f"decay_kernel={decay_kernel})")
    return None


def decay_fixes(setting: dict, limit: int = 2) -> list[dict]:
    """Up to ``limit`` smallest changes of ``setting`` (as config fields) that
    :func:`decay_problem` accepts, the decay λ kept where one is asked for."""
    lam = float(setting["weight_decay"]) or float(setting["rule_hparams.weight_decay"]) or 5e-4
    opt = setting["optimizer"]
    candidates = [
        # the optimizer decays W (and biases), KP's transform B: the papers' SGD
        {"weight_decay_mask": "params" if setting["weight_decay_mask"] == "all" else None,
         "rule_hparams.weight_decay": lam, "rule_hparams.decay_kernel": False,
         "weight_decay": lam},
        # the optimizer decays every trained weight, W and B alike (authors' torch SGD, AdamW)
        {"optimizer": "adamw" if opt == "adam" else None, "weight_decay": lam,
         "weight_decay_mask": "all", "rule_hparams.weight_decay": 0.0},
        # KP's transform decays W and B; no decay in the optimizer
        {"weight_decay": 0.0, "rule_hparams.weight_decay": lam,
         "rule_hparams.decay_kernel": True},
        # no decay at all (KP's updates alone keep W − B constant)
        {"weight_decay": 0.0, "rule_hparams.weight_decay": 0.0},
    ]
    if setting["weight_decay_mask"] == "conv_kernels":
        candidates.insert(0, {"weight_decay_mask": "kernels", "rule_hparams.weight_decay": lam,
                              "rule_hparams.decay_kernel": False, "weight_decay": lam})
    fixes: list[dict] = []
    for cand in candidates:
        change = {k: v for k, v in cand.items() if v is not None and setting[k] != v}
        if change and decay_problem({**setting, **change}) is None and change not in fixes:
            fixes.append(change)
    return fixes[:limit]
