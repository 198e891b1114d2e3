"""Weight mirror (Akrout et al. 2019; ASAP thesis eq. 2.6)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from alearn._layers.ops import ConvOp, DenseOp, LinearOp
from alearn.rules import _checks
from alearn.rules.fa import FA

Array = jax.Array


LAYOUT = "layout_"  # prefix of WM's layout marker: feedback/<layer>/layout_<i|o|b per axis>
_PLAIN = ("io", "iiio")  # dense (in, out) and conv HWIO: no marker needed
_UNMARKED = {2: "io", 3: "bio", 4: "iiio", 5: "biiio"}  # kernel ndim -> layout, no marker


def layout_marker(op: LinearOp) -> str | None:
    """The name of the layout marker a WM layer with ``op`` owns, or None (plain layouts).

    ``"layout_" + op.kernel_layout``: one letter per kernel axis, ``i`` input (contracted,
    window included), ``o`` output, ``b`` batch (independent maps). E.g. a DenseGeneral
    (d, heads, head_dim) kernel owns ``layout_ioo``, an attention out-projection (heads,
    head_dim, d) ``layout_iio``, ``Embed.attend``'s (V, d) ``layout_oi``.
    """
    return None if op.kernel_layout in _PLAIN else LAYOUT + op.kernel_layout


def mirror_op(kernel_shape: tuple[int, ...], batch: int, dtype=jnp.float32) -> LinearOp:
    """The operator through which mirror-mode noise is sent for a kernel of this shape.

    Dense (in, out) kernels use ``DenseOp`` on (batch, in) noise. Conv HWIO kernels use a
    VALID convolution on (batch, kh, kw, cin) noise patches: each noise sample is exactly
    one receptive field of the layer, so strides and padding do not matter and the
    estimate ``weight_grad(ξ, apply(ξ, W))`` has expectation ``σ² W`` per sample.
    """
    if len(kernel_shape) == 2:
        return DenseOp(in_shape=(batch, kernel_shape[0]), kernel_shape=tuple(kernel_shape),
                       dtype=dtype)
    if len(kernel_shape) == 4:
        kh, kw, cin, _ = kernel_shape
        return ConvOp(in_shape=(batch, kh, kw, cin), kernel_shape=tuple(kernel_shape),
                      dtype=dtype, padding="VALID")
    raise ValueError(f"weight mirror supports dense (2-D) and conv HWIO (4-D) kernels "
                     f"without a layout, got kernel shape {kernel_shape}")


def _mirror_any(kernel: Array, key: Array, noise_std: float, batch: int,
                layout: str) -> Array:
    """mean_i[(W ξ_i) ξ_iᵀ] for a kernel of any rank read through ``layout``.

    The kernel is transposed to (batch axes, input axes, output axes) and reshaped to
    ``nb`` matrices (fan_in, fan_out); ξ is (batch, fan_in) noise (``nb`` = 1) or
    (nb, batch, fan_in), one draw per independent map.
    """
    pick = lambda c: [a for a, l in enumerate(layout) if l == c]  # noqa: E731
    perm = pick("b") + pick("i") + pick("o")
    size = lambda axes: math.prod(kernel.shape[a] for a in axes)  # noqa: E731
    nb, ni, no = size(pick("b")), size(pick("i")), size(pick("o"))
    kt = jnp.transpose(kernel, perm)
    if nb == 1:
        w = kt.reshape(ni, no)
        xi = noise_std * jax.random.normal(key, (batch, ni), kernel.dtype)
        g = jnp.dot(xi.T, jnp.dot(xi, w))
    else:
        w = kt.reshape(nb, ni, no)
        xi = noise_std * jax.random.normal(key, (nb, batch, ni), kernel.dtype)
        g = jnp.einsum("nsi,nso->nio", xi, jnp.einsum("nsi,nio->nso", xi, w))
    return jnp.transpose(g.reshape(kt.shape), list(np.argsort(perm))) / batch


def mirror_delta(kernel: Array, b: Array, key: Array, noise_std: float, lr: float,
                 decay: float, batch: int, layout: str | None = None) -> Array:
    """One mirror-mode update of one layer's B (eq. 2.6, sign as in Akrout et al.).

    Injects ξ ~ N(0, σ²) (``batch`` samples) as the layer's input, observes ``W ξ`` and
    returns ``ΔB = η mean_i[(W ξ_i) ξ_iᵀ] − λ_B B``, whose expectation ``η σ² W − λ_B B``
    drives B towards ``(η σ² / λ_B) W``. ``layout`` (one of ``i``/``o``/``b`` per kernel
    axis, see :func:`layout_marker`) says which axes are the map's inputs; by default a
    2-D kernel is dense (in, out) and a 4-D one conv HWIO (:func:`mirror_op`).
    """
    if layout is None and kernel.ndim in (2, 4):
        layout = _UNMARKED[kernel.ndim]
    if layout is None or len(layout) != kernel.ndim or set(layout) - set("iob"):
        raise ValueError(f"weight mirror: kernel shape {kernel.shape} needs a layout of "
                         f"{kernel.ndim} letters i/o/b (input, output, batch axes), got "
                         f"{layout!r}")
    if layout in _PLAIN:
        op = mirror_op(kernel.shape, batch, kernel.dtype)
        xi = noise_std * jax.random.normal(key, op.in_shape, kernel.dtype)
        return lr * op.weight_grad(xi, op.apply(xi, kernel)) / batch - decay * b
    return lr * _mirror_any(kernel, key, noise_std, batch, layout) - decay * b


def _layout_of(path: tuple, kernel: Array, siblings: dict) -> str:
    """The full layout of a stored kernel: its marker's letters after one ``b`` per
    leading axis stacked by ``nn.scan``; unmarked kernels by rank (``_UNMARKED``)."""
    marks = [k for k in siblings if isinstance(k, str) and k.startswith(LAYOUT)]
    name = "/".join(map(str, path))
    if not marks:
        if kernel.ndim not in _UNMARKED:
            raise ValueError(
                f"weight mirror: feedback {name} pairs with a kernel of shape {kernel.shape} "
                "and has no layout marker; create the layer's feedback with "
                "rule.layer_feedback_names(tape, op) so WM records which axes are inputs")
        return _UNMARKED[kernel.ndim]
    own = marks[0][len(LAYOUT):]
    stack = kernel.ndim - len(own)
    if len(marks) > 1 or stack < 0 or siblings[marks[0]].ndim != stack + 1:
        raise ValueError(
            f"weight mirror: feedback {name}: kernel shape {kernel.shape} does not fit its "
            f"layout marker(s) {marks}; a kernel stacked by nn.scan must have its feedback "
            "stacked along the same leading axes (variable_axes={'feedback': 0})")
    return "b" * stack + own


def _kernel_of(path: tuple, b: Array, flat_p: dict) -> Array:
    """The forward kernel B pairs with: ``kernel`` at B's module path, else the module's
    only parameter of B's shape (``Embed.attend``'s ``embedding``)."""
    mod = path[:-1]
    if mod + ("kernel",) in flat_p:
        return flat_p[mod + ("kernel",)]
    same = [p for p in flat_p if p[:-1] == mod and flat_p[p].shape == b.shape]
    if len(same) != 1:
        raise ValueError(f"feedback {'/'.join(map(str, path))} has no kernel at "
                         f"{'/'.join(map(str, mod + ('kernel',)))}")
    return flat_p[same[0]]


def mirror_step(rule: "WM", params: dict, feedback: dict, key: Array) -> dict:
    """Mirror mode: ``rule.mirror_steps`` noise updates of every layer's B; returns feedback.

    Pure and jittable. ``params``/``feedback`` are the model's ``"params"`` and
    ``"feedback"`` collections; each ``feedback/.../B`` is paired with the kernel at the
    same module path and gets its own noise (``fold_in`` by layer index and step), as in
    Akrout et al., where noise is injected into each layer separately. The trainer calls
    this between ordinary steps (engaged mode), e.g. after every step.

    Which kernel axes are the map's inputs is read from the layer's layout marker
    (``feedback/.../layout_<letters>``, :func:`layout_marker`), which only layers with a
    non-plain kernel own; leading axes the kernel has beyond its marker (layers stacked by
    ``nn.scan``) are independent maps, each mirrored with its own noise. Unmarked kernels
    are plain: 2-D dense, 4-D conv HWIO, and 3-D / 5-D are read as those stacked once
    (L, in, out) / (L, kh, kw, cin, cout); other unmarked ranks raise ``ValueError``.
    """
    flat_fb = traverse_util.flatten_dict(feedback)
    flat_p = traverse_util.flatten_dict(params)
    new = dict(flat_fb)
    paths = sorted(p for p in flat_fb if p[-1] == "B")
    for i, path in enumerate(paths):
        b = flat_fb[path]
        kernel = _kernel_of(path, b, flat_p)
        if kernel.shape != b.shape:
            raise ValueError(f"feedback {'/'.join(map(str, path))} of shape {b.shape} does "
                             f"not match its kernel's shape {kernel.shape}")
        siblings = {p[-1]: v for p, v in flat_fb.items() if p[:-1] == path[:-1]}
        layout = _layout_of(path, kernel, siblings)
        lkey = jax.random.fold_in(key, i)

        def body(t, b, kernel=kernel, lkey=lkey, layout=layout):
            return b + mirror_delta(kernel, b, jax.random.fold_in(lkey, t), rule.noise_std,
                                    rule.mirror_lr, rule.mirror_decay, rule.mirror_batch,
                                    layout)

        new[path] = jax.lax.fori_loop(0, rule.mirror_steps, body, b)
    return traverse_util.unflatten_dict(new)


@dataclasses.dataclass(frozen=True)
class WM(FA):
    """Weight mirror: FA's feedback path (engaged mode); B learned only in mirror mode.

    Ordinary steps are FA's (B receives no gradient). Between them the trainer calls
    :meth:`mirror` (:func:`mirror_step`): ``alearn.train.setup.mirror_hook`` does so inside
    the jitted train step after every ``mirror_every``-th optimizer step. Defaults are alearn's choice (the thesis gives
    none): σ = 1, η_B = λ_B = 0.1, so B relaxes towards W with a time constant of about
    10 mirror steps; one mirror step of 128 noise samples after every 10th training step.
    A mirror step costs about 0.8 of a BP step on the MLP (XLA flop count: 2.23 vs 1.23
    GFLOP for step + mirror), so mirroring every step made WM 1.8x BP; every 10th step
    amortises it to about 1.08x, and B still tracks W within ~100 training steps.
    ``mirror_every=1`` is the every-step schedule.

    Kernels of any rank: a layer whose kernel is not dense (in, out) or conv HWIO also
    owns a one-element layout marker ``feedback/layout_<letters>`` naming which kernel
    axes are the map's inputs, outputs and batch axes (:func:`layout_marker`, from the
    op's ``kernel_layout``), so that :func:`mirror_step`, which sees only the parameter
    trees, injects the noise as the layer's true input. Layers stacked by ``nn.scan``
    (feedback stacked with them) are mirrored slice by slice.

    Attributes:
      noise_std: σ of the injected noise (> 0).
      mirror_lr: η_B (> 0).
      mirror_decay: λ_B (>= 0).
      mirror_batch: noise samples per mirror step (>= 1).
      mirror_steps: mirror updates per call of :meth:`mirror` (>= 1).
      mirror_every: call :meth:`mirror` after every k-th training step (>= 1).
    """

    name = "wm"

    noise_std: float = 1.0
    mirror_lr: float = 0.1
    mirror_decay: float = 0.1
    mirror_batch: int = 128
    mirror_steps: int = 1
    mirror_every: int = 10

    def __post_init__(self):
        super().__post_init__()
        if self.paper_code_fa_conv:
            raise ValueError("rule 'wm': paper_code_fa_conv=True is a switch of rule 'fa' only "
                             "(the authors' FA conv aliasing); WM learns its own B")
        _checks.positive(self.name, "noise_std", self.noise_std)
        _checks.positive(self.name, "mirror_lr", self.mirror_lr)
        _checks.non_negative(self.name, "mirror_decay", self.mirror_decay)
        _checks.positive_int(self.name, "mirror_batch", self.mirror_batch)
        _checks.positive_int(self.name, "mirror_steps", self.mirror_steps)
        _checks.positive_int(self.name, "mirror_every", self.mirror_every)

    def layer_feedback_names(self, tape: Any, op: LinearOp) -> tuple[str, ...]:
        """``B``, plus the layout marker of a non-plain kernel (:func:`layout_marker`)."""
        mark = layout_marker(op)
        return super().layer_feedback_names(tape, op) + ((mark,) if mark else ())

    def init_feedback(self, name: str, key: Array, op: LinearOp, num_classes: int) -> Array:
        if name.startswith(LAYOUT):  # one element: orbax cannot save zero-size arrays
            return jnp.zeros((1,), op.dtype)
        return super().init_feedback(name, key, op, num_classes)

    def mirror(self, params: dict, feedback: dict, key: Array) -> dict:
        """Mirror mode for all layers; see :func:`mirror_step`."""
        return mirror_step(self, params, feedback, key)
