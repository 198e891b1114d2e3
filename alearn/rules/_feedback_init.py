"""Initialisers for fixed or learned feedback weights (FA, DFA, KP, WM).

Feedback weights are drawn from the key that ``Rule.init_feedback`` receives (the layer's
own ``"params"`` RNG under the feedback variable's name), never copied from the forward
kernel: FA's B and W are independent draws from the same family of distributions.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from alearn._layers import initializers
from alearn._layers.ops import LinearOp
from alearn.rules import _checks

Array = jax.Array

# name -> (variance scale, fan mode, distribution), as in jax.nn.initializers; the last two
# are the ASAP authors' feedback initialisations (code/building_blocks.py):
# - "normal_fan_in": N(0, 1/fan_in), untruncated; for DFA's D fan_in = classes, i.e. the
#   authors' Feedback_Receiver ``normal_(std=sqrt(1/connect_features))``;
# - "uniform_unit": U(-1, 1) whatever the shape, the authors' Linear_FA ``weight_fa``.
INITS = {
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "normal_fan_in": (1.0, "fan_in", "normal"),
    "uniform_unit": None,
}


def validate(rule: str, init: str, scale: float) -> None:
    """Checks an (init name, scale) pair; raises ``ValueError`` naming the bad field."""
    _checks.choice(rule, "feedback_init", init, INITS)
    _checks.positive(rule, "feedback_scale", scale)


def _axes(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(int(a) % ndim for a in axes))


def draw(key: Array, shape: Sequence[int], init: str, scale: float, dtype: Any = jnp.float32,
         in_axis: int | Sequence[int] = -2, out_axis: int | Sequence[int] = -1,
         batch_axis: Sequence[int] = ()) -> Array:
    """Draws feedback weights of ``shape`` from initialiser ``init``, times ``scale``.

    The default axes treat ``shape`` like a forward kernel (dense (in, out) or conv HWIO),
    so B has the same distribution as a kernel initialised with ``init``. As in
    ``jax.nn.initializers.variance_scaling``, ``in_axis`` / ``out_axis`` may be tuples and
    ``batch_axis`` names axes of independent maps; the remaining axes are the receptive
    field (fan_in = in sizes x receptive field, fan_out = out sizes x receptive field).
    Without batch axes the values are drawn flat for the shape (receptive, fan_in core,
    fan_out core) and reshaped, so a kernel (d, heads, head_dim) contracted on axis 0 gets
    exactly the values of a dense (d, heads * head_dim) draw from the same key.
    """
    shape = tuple(shape)
    if INITS[init] is None:  # uniform_unit
        flat = jax.random.uniform(key, (math.prod(shape),), dtype, -1.0, 1.0)
        return scale * flat.reshape(shape)
    var, mode, dist = INITS[init]
    if isinstance(in_axis, int) and isinstance(out_axis, int) and not batch_axis:
        fn = initializers.variance_scaling(var, mode, dist, in_axis=in_axis, out_axis=out_axis)
        return scale * fn(key, shape, dtype)
    n = len(shape)
    ins, outs, bat = _axes(in_axis, n), _axes(out_axis, n), _axes(batch_axis, n)
    if bat:
        fn = jax.nn.initializers.variance_scaling(var, mode, dist, in_axis=ins, out_axis=outs,
                                                  batch_axis=bat)
        return scale * fn(key, shape, dtype)
    size = lambda axes: math.prod(shape[a] for a in axes)  # noqa: E731
    rest = tuple(a for a in range(n) if a not in ins + outs)
    core = (size(ins), size(outs))
    eq = core if not rest else (size(rest),) + core
    fn = initializers.variance_scaling(var, mode, dist)
    return scale * fn(key, eq, dtype).reshape(shape)


def draw_like(key: Array, op: LinearOp, init: str, scale: float) -> Array:
    """Feedback weights with ``op``'s kernel shape, drawn for the kernel's true fans.

    The op's ``kernel_in_axes`` (less its window axes), ``kernel_out_axes`` and
    ``kernel_batch_axes`` become the draw's in/out/batch axes, so a DenseGeneral kernel or
    an ``Embed.attend`` kernel (V, d) contracted on axis 1 gets the distribution of the
    equivalent dense kernel. Dense (in, out) and conv HWIO kernels take the default axes
    (the same values as before the op knew its axes).
    """
    shape, n = tuple(op.kernel_shape), len(op.kernel_shape)
    window = set(op.kernel_window_axes)
    ins = tuple(a for a in op.kernel_in_axes if a not in window)
    outs, bat = tuple(op.kernel_out_axes), tuple(op.kernel_batch_axes)
    if n < 2 or (ins == (n - 2,) and outs == (n - 1,) and not bat):
        return draw(key, shape, init, scale, op.dtype)
    return draw(key, shape, init, scale, op.dtype, in_axis=ins, out_axis=outs, batch_axis=bat)
