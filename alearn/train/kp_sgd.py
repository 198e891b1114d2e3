"""Kolen–Pollack under SGD in one optimizer pass: B needs no momentum buffer of its own.

With KP (eq. 2.7) W and B get the same gradient ``g`` plus each its own decay ``λ``:
``g_W = g + λW``, ``g_B = g + λB``. SGD with momentum μ (heavy ball or Nesterov) and any
learning-rate schedule η_t is linear in the gradient and both momentum buffers start at 0,
so ``D = W − B`` and ``m_D = m_W − m_B`` follow a gradient-free recurrence:

    m_D' = λD + μ m_D,   D' = D − η_t m_D'      (Nesterov: D' = D − η_t (λD + μ m_D'))

Both start from ``(D_0, 0)``, so they stay scalar multiples of ``D_0 = W_0 − B_0``:
``D_t = a_t D_0``, ``m_D = c_t D_0`` with ``a_0 = 1``, ``c_0 = 0``,
``c' = λa + μc``, ``q = c'`` (Nesterov ``λa + μc'``; no momentum ``λa``),
``a' = a − η_t q``.
So B's step is W's step plus a multiple of the constant ``D_0``:

    u_B = u_W + η_t q_t D_0

Two scalars replace B's momentum buffer; B's update reads W's new momentum, B and
``D_0`` (a read-only buffer, never written) and no longer reads or writes a momentum of its
own. B's update does not read W either, so XLA needs no defensive copy of the donated W
(docs/notes/perf.md). Equal to ``optax.chain(kp.transform(), create_optimizer("sgd", ...))``
up to float32 rounding (tests/test_kp_sgd.py, against that chain and a float64 NumPy
reference).

Conditions (:func:`unfusable_reason` names the one that fails): rule ``KP`` itself, the
same total decay on W and on B (the trainer's KP check), and a weight-decay mask that
treats every kernel alike (``params``, ``kernels`` or ``all``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from alearn.rules._pairs import kernel_path
from alearn.rules.kp import KP
from alearn.train.decay import decay_mask

Array = jax.Array

#: Weight-decay masks under which every kernel decays alike (``conv_kernels`` does not).
FUSABLE_MASKS = ("params", "kernels", "all")


class KPSGDState(NamedTuple):
    """``base``: SGD's state over ``{"params"}`` only; ``count``: steps taken (the
    schedule's argument); ``a``, ``c``: ``D_t = a D_0``, ``m_D = c D_0``; ``d0``: ``D_0``
    per feedback leaf (the tree of ``feedback``)."""
    base: Any
    count: Array
    a: Array
    c: Array
    d0: Any


def decays(rule: KP, weight_decay: float, weight_decay_mask: str) -> tuple[float, float]:
    """(λ_W, λ_B): the total decay on a paired kernel and on its B per step."""
    base = float(weight_decay)
    lam_w = base + (rule.weight_decay if rule.decay_kernel else 0.0)
    lam_b = (base if str(weight_decay_mask).lower() == "all" else 0.0) + rule.weight_decay
    return lam_w, lam_b


def unfusable_reason(rule: Any, *, weight_decay: float, weight_decay_mask: str) -> str | None:
    """Why ``rule`` with this SGD cannot run in one pass, or None when it can."""
    if type(rule) is not KP:  # pylint: disable=unidiomatic-typecheck
        return f"rule {getattr(rule, 'name', rule)!r} is not 'kp'"
    if str(weight_decay_mask).lower() not in FUSABLE_MASKS:
        return (f"weight_decay_mask={weight_decay_mask!r} decays kernels unevenly; fused form "
                f"needs one of: {', '.join(FUSABLE_MASKS)}")
    lam_w, lam_b = decays(rule, weight_decay, weight_decay_mask)
    if abs(lam_w - lam_b) > 1e-12 * max(1.0, lam_w, lam_b):
        return f"W decays by {lam_w:g} per step but B by {lam_b:g}"
    return None


def kp_sgd(rule: KP, learning_rate: float | Callable[[Array], Array], *,
           momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
           weight_decay_mask: str = "params") -> optax.GradientTransformation:
    """KP with SGD over ``alearn.trainable`` in one pass (see the module docstring).

    Same arguments as ``create_optimizer("sgd", ...)`` with the learning rate given as a
    float or an ``optax.Schedule``. The feedback updates the rule emits are not read: B's
    step is derived from W's (KP's ``ΔB = ΔW``).

    Raises:
      ValueError: the combination cannot be fused (:func:`unfusable_reason`), or (at
        ``init``) a feedback leaf without a kernel of its shape beside it.
    """
    reason = unfusable_reason(rule, weight_decay=weight_decay,
                              weight_decay_mask=weight_decay_mask)
    if reason is not None:
        raise ValueError(f"kp_sgd cannot fuse B's update into W's: {reason}; use "
                         "create_rule_optimizer(rule, create_optimizer('sgd', ...)) instead")
    schedule = (learning_rate if callable(learning_rate)
                else optax.constant_schedule(float(learning_rate)))
    lam, _ = decays(rule, weight_decay, weight_decay_mask)
    mu = float(momentum or 0.0)
    base = optax.sgd(schedule, momentum=mu or None, nesterov=nesterov)
    if weight_decay:
        base = optax.chain(optax.add_decayed_weights(weight_decay,
                                                     mask=decay_mask(weight_decay_mask)), base)
    rule_decay = rule.transform()

    def init_fn(params):
        kernels = traverse_util.flatten_dict(params["params"])
        masked = (traverse_util.flatten_dict(decay_mask(weight_decay_mask)(params)["params"])
                  if weight_decay else {})
        d0 = {}
        for path, b in traverse_util.flatten_dict(params.get("feedback", {})).items():
            kpath = kernel_path(kernels, path) if path[-1] == "B" else None
            if kpath is None or kernels[kpath].shape != b.shape:
                raise ValueError(f"kp_sgd: feedback leaf {'/'.join(map(str, path))} has no "
                                 f"kernel of shape {b.shape} beside it; KP pairs each B with "
                                 "its layer's kernel")
            if weight_decay and not masked.get(kpath, False):  # e.g. a tied head's embedding
                raise ValueError(  # under "kernels": B would take a decay W does not get
                    f"kp_sgd: weight_decay_mask={weight_decay_mask!r} does not decay "
                    f"{'/'.join(map(str, kpath))}, which B at {'/'.join(map(str, path))} "
                    "serves, so W and B would decay unevenly; use weight_decay_mask='params' "
                    "or 'all'")
            d0[path] = kernels[kpath] - b
        return KPSGDState(base=base.init({"params": params["params"]}),
                          count=jnp.zeros((), jnp.int32), a=jnp.ones((), jnp.float32),
                          c=jnp.zeros((), jnp.float32), d0=traverse_util.unflatten_dict(d0))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("kp_sgd needs params: call update(updates, state, params)")
        decayed, _ = rule_decay.update(updates, rule_decay.init(params), params)  # λW if
        u_params, base_state = base.update({"params": decayed["params"]}, state.base,  # asked
                                           {"params": params["params"]})
        out = {"params": u_params["params"]}
        eta = jnp.asarray(schedule(state.count), jnp.float32)
        c = lam * state.a + mu * state.c  # m_D' = λD + μ m_D
        q = (lam * state.a + mu * c) if (nesterov and mu) else c
        step = eta * q  # D' = D − step D_0
        if "feedback" in params:  # B's step: its W's (a kernel or a tied head's embedding)
            u_w = traverse_util.flatten_dict(out["params"])
            out["feedback"] = traverse_util.unflatten_dict({
                path: u_w[kernel_path(u_w, path)] + (step * d0).astype(d0.dtype)
                for path, d0 in traverse_util.flatten_dict(state.d0).items()})
        return out, KPSGDState(base=base_state, count=optax.safe_increment(state.count),
                               a=state.a - step, c=c, d0=state.d0)

    return optax.GradientTransformation(init_fn, update_fn)
