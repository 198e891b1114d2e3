"""One Associated Learning block: f, g, h, b, its local losses and its pure step.

Thesis (associated-learning-thesis.txt) Sec. 2.3–2.5:

- ``s_i = f_i(s_{i-1})`` (2.2), ``y_i = g_i(y_{i-1})`` (2.3), ``ŷ_{i-1} = h_i(y_i)`` (2.5);
- associated loss ``L_i = ‖b_i(s_i) − y_i‖²`` (2.7), trains f_i and b_i;
- autoencoder loss ``L'_i = MSE(h_i(g_i(y_{i-1})), y_{i-1})`` (2.6), trains g_i and h_i.

Reductions: ``L_i`` with ``assoc_reduction="mean"`` (default, the authors' code:
``tf.losses.mean_squared_error``) is the mean over batch and features; ``"sum"`` is the
squared norm per example (sum over features) averaged over the batch — eq. 2.7 literally,
which makes every L2 coefficient (y width)× weaker relative to the loss.
L2 (``weight_decay`` λ, loss += λ/2 ‖W‖², tf ``l2_regularizer``) acts on kernels only (never
biases or BatchNorm parameters); ``l2_scope`` picks which: ``"f"`` (default, the code: f's
kernels, bridges never), ``"f_conv"`` (f's conv kernels only: the code's VGG_AL, whose
dense f layers are not regularised), ``"f_and_b"`` (f and bridge kernels). ``L'_i`` is the mean over
batch and features (eq. 2.6 "MSE"). Inputs ``s_{i-1}``, ``y_{i-1}`` cross
``jax.lax.stop_gradient``; ``y_i`` is stop-gradiented inside ``L_i`` unless
``assoc_trains_g`` (journal version). The block's state is a pure pytree
(:class:`BlockState`); :func:`block_step` is pure and can be jitted, placed on a device
and vmapped over stacked states of equal-shaped blocks.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Array = jax.Array
REDUCTIONS = ("mean", "sum")
L2_SCOPES = ("f", "f_conv", "f_and_b")


@dataclasses.dataclass(frozen=True, eq=False)
class BlockDef:
    """Static description of block i (hashable by identity: a valid jit static argument).

    Attributes:
      f: forward function s_{i-1} -> s_i (any Flax module; ``train=`` passed if accepted).
      g: target encoder y_{i-1} -> y_i.
      h: target decoder y_i -> ŷ_{i-1}.
      b: bridge s_i -> y_i's space.
      tx_forward: optimizer of the forward side (f, b); the thesis uses Adam(1e-4).
      tx_ae: optimizer of the autoencoder side (g, h); the seed code uses 2x the lr.
      assoc_trains_g: let L_i also train g_i (journal version); default False (seed code).
      assoc_reduction: "mean" (default, the code's MSE) or "sum" (eq. 2.7: ‖·‖² per
        example, batch mean).
      weight_decay: L2 coefficient λ, loss += λ/2 ‖W‖² (tf l2_regularizer) on the kernels
        ``l2_scope`` names.
      l2_scope: "f" (default: f kernels), "f_conv" (f conv kernels), "f_and_b" (f and b).
      name: label used in error messages and metrics.
    """

    f: nn.Module
    g: nn.Module
    h: nn.Module
    b: nn.Module
    tx_forward: optax.GradientTransformation = dataclasses.field(
        default_factory=lambda: optax.adam(1e-4))
    tx_ae: optax.GradientTransformation = dataclasses.field(
        default_factory=lambda: optax.adam(2e-4))
    assoc_trains_g: bool = False
    assoc_reduction: str = "mean"
    weight_decay: float = 0.0
    l2_scope: str = "f"
    name: str = "block"

    def __post_init__(self):
        if self.assoc_reduction not in REDUCTIONS:
            raise ValueError(f"unknown assoc_reduction {self.assoc_reduction!r}; choose one "
                             f"of: {', '.join(REDUCTIONS)}")
        if self.l2_scope not in L2_SCOPES:
            raise ValueError(f"unknown l2_scope {self.l2_scope!r}; choose one of: "
                             f"{', '.join(L2_SCOPES)}")


class BlockState(NamedTuple):
    """Pure pytree state of one block."""

    params: dict  # {"f", "g", "h", "b"} -> Flax params
    model_state: dict  # {"f", "b"} -> non-param collections (batch_stats), maybe empty
    opt_forward: Any  # optax state over {"f", "b"}
    opt_ae: Any  # optax state over {"g", "h"}


def _takes_train(module: nn.Module) -> bool:
    try:
        return "train" in inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return False


def apply_fn(module: nn.Module, params: Any, state: dict, x: Array, train: bool
             ) -> tuple[Array, dict]:
    """Applies ``module``; returns (output, new non-param state). ``sow`` is discarded."""
    kwargs = {"train": train} if _takes_train(module) else {}
    variables = {"params": params, **state}
    if train and state:
        out, new_state = module.apply(variables, x, mutable=list(state), **kwargs)
        return out, dict(new_state)
    return module.apply(variables, x, **kwargs), state


def _init_fn(module: nn.Module, key: Array, x: Array) -> tuple[dict, dict, Array]:
    kwargs = {"train": False} if _takes_train(module) else {}
    variables = dict(module.init({"params": key}, x, **kwargs))
    params = variables.pop("params", {})
    variables.pop("intermediates", None)
    out = module.apply({"params": params, **variables}, x, **kwargs)
    return params, variables, out


def init_block(bd: BlockDef, key: Array, s_in: Array, y_in: Array
               ) -> tuple[BlockState, Array, Array]:
    """Initialises block ``bd`` on example inputs; returns (state, s_out, y_out)."""
    kf, kg, kh, kb = jax.random.split(key, 4)
    pf, sf, s_out = _init_fn(bd.f, kf, s_in)
    pg, _, y_out = _init_fn(bd.g, kg, y_in)
    pb, sb, _ = _init_fn(bd.b, kb, s_out)
    ph, _, _ = _init_fn(bd.h, kh, y_out)
    params = {"f": pf, "g": pg, "h": ph, "b": pb}
    state = BlockState(params, {"f": sf, "b": sb},
                       bd.tx_forward.init({"f": pf, "b": pb}),
                       bd.tx_ae.init({"g": pg, "h": ph}))
    return state, s_out, y_out


def _l2(tree: Any, conv_only: bool = False) -> Array:
    """‖W‖² over the kernels of ``tree`` (conv kernels only: rank 4); biases and BN never."""
    leaves = [x for path, x in jax.tree_util.tree_leaves_with_path(tree)
              if "kernel" in jax.tree_util.keystr(path) and (not conv_only or x.ndim == 4)]
    return sum((jnp.sum(x * x) for x in leaves), jnp.zeros(()))


def l2_penalty(bd: BlockDef, params: dict) -> Array:
    """``λ/2 ‖W‖²`` over the kernels ``bd.l2_scope`` names (0 when ``weight_decay`` is 0)."""
    if not bd.weight_decay:
        return jnp.zeros(())
    sq = _l2(params["f"], conv_only=bd.l2_scope == "f_conv")
    if bd.l2_scope == "f_and_b":
        sq = sq + _l2(params["b"])
    return 0.5 * bd.weight_decay * sq


def associated_loss(bd: BlockDef, params: dict, model_state: dict, s_in: Array, y_in: Array,
                    train: bool = True) -> tuple[Array, tuple[Array, Array, dict]]:
    """``L_i = ‖b_i(f_i(s_{i-1})) − y_i‖²`` (eq. 2.7) + L2; aux (s_i, y_i, new state)."""
    s_in, y_in = jax.lax.stop_gradient(s_in), jax.lax.stop_gradient(y_in)
    s, f_state = apply_fn(bd.f, params["f"], model_state["f"], s_in, train)
    y = bd.g.apply({"params": params["g"]}, y_in)
    target = y if bd.assoc_trains_g else jax.lax.stop_gradient(y)
    z, b_state = apply_fn(bd.b, params["b"], model_state["b"], s, train)
    sq = (z - target) ** 2
    loss = sq.reshape(sq.shape[0], -1).sum(-1).mean() if bd.assoc_reduction == "sum" \
        else sq.mean()
    loss = loss + l2_penalty(bd, params)
    return loss, (s, y, {"f": f_state, "b": b_state})


def autoencoder_loss(bd: BlockDef, params: dict, y_in: Array) -> tuple[Array, Array]:
    """``L'_i = MSE(h_i(g_i(y_{i-1})), y_{i-1})`` (eq. 2.6); aux y_i."""
    y_in = jax.lax.stop_gradient(y_in)
    y = bd.g.apply({"params": params["g"]}, y_in)
    y_hat = bd.h.apply({"params": params["h"]}, y)
    return jnp.mean((y_hat - y_in) ** 2), y


def block_losses(bd: BlockDef, params: dict, model_state: dict, s_in: Array, y_in: Array
                 ) -> tuple[Array, tuple[dict, Array, Array, dict]]:
    """``L_i + L'_i`` and aux (metrics, s_i, y_i, new model state)."""
    assoc, (s, y, new_state) = associated_loss(bd, params, model_state, s_in, y_in, True)
    ae, _ = autoencoder_loss(bd, params, y_in)
    return assoc + ae, ({"assoc_loss": assoc, "ae_loss": ae}, s, y, new_state)


def block_step(bd: BlockDef, st: BlockState, s_in: Array, y_in: Array
               ) -> tuple[BlockState, Array, Array, dict]:
    """One local update of block ``bd``: (new_state, s_i, y_i, metrics).

    ``s_i``, ``y_i`` are computed with the parameters *before* the update (what the next
    block consumes in the same step). Pure: jit with ``bd`` static, or use
    :func:`make_block_step`.
    """
    grads, (metrics, s, y, new_model_state) = jax.grad(
        lambda p: block_losses(bd, p, st.model_state, s_in, y_in), has_aux=True)(st.params)
    fwd_p = {"f": st.params["f"], "b": st.params["b"]}
    ae_p = {"g": st.params["g"], "h": st.params["h"]}
    upd_f, opt_f = bd.tx_forward.update({"f": grads["f"], "b": grads["b"]}, st.opt_forward, fwd_p)
    upd_a, opt_a = bd.tx_ae.update({"g": grads["g"], "h": grads["h"]}, st.opt_ae, ae_p)
    fwd_p, ae_p = optax.apply_updates(fwd_p, upd_f), optax.apply_updates(ae_p, upd_a)
    params = {"f": fwd_p["f"], "g": ae_p["g"], "h": ae_p["h"], "b": fwd_p["b"]}
    return BlockState(params, new_model_state, opt_f, opt_a), s, y, metrics


def make_block_step(bd: BlockDef, jit: bool = True, **jit_kwargs):
    """``step(state, s_in, y_in) -> (state, s_out, y_out, metrics)`` for block ``bd``.

    ``jit_kwargs`` go to ``jax.jit`` (e.g. ``donate_argnums=0``, shardings).
    """
    fn = lambda st, s_in, y_in: block_step(bd, st, s_in, y_in)  # noqa: E731
    return jax.jit(fn, **jit_kwargs) if jit else fn
