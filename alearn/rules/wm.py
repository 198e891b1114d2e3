"""Weight mirror (Akrout et al. 2019; ASAP thesis eq. 2.6)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import traverse_util

from alearn.layers.ops import ConvOp, DenseOp, LinearOp
from alearn.rules import _checks
from alearn.rules.fa import FA

Array = jax.Array


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
    raise ValueError(f"weight mirror supports dense (2-D) and conv HWIO (4-D) kernels, got "
                     f"kernel shape {kernel_shape}")


def mirror_delta(kernel: Array, b: Array, key: Array, noise_std: float, lr: float,
                 decay: float, batch: int) -> Array:
    """One mirror-mode update of one layer's B (eq. 2.6, sign as in Akrout et al.).

    Injects ξ ~ N(0, σ²) (``batch`` samples) as the layer's input, observes ``W ξ`` and
    returns ``ΔB = η mean_i[(W ξ_i) ξ_iᵀ] − λ_B B``, whose expectation ``η σ² W − λ_B B``
    drives B towards ``(η σ² / λ_B) W``.
    """
    op = mirror_op(kernel.shape, batch, kernel.dtype)
    xi = noise_std * jax.random.normal(key, op.in_shape, kernel.dtype)
    y = op.apply(xi, kernel)
    return lr * op.weight_grad(xi, y) / batch - decay * b


def mirror_step(rule: "WM", params: dict, feedback: dict, key: Array) -> dict:
    """Mirror mode: ``rule.mirror_steps`` noise updates of every layer's B; returns feedback.

    Pure and jittable. ``params``/``feedback`` are the model's ``"params"`` and
    ``"feedback"`` collections; each ``feedback/.../B`` is paired with the kernel at the
    same module path and gets its own noise (``fold_in`` by layer index and step), as in
    Akrout et al., where noise is injected into each layer separately. The trainer calls
    this between ordinary steps (engaged mode), e.g. after every step.
    """
    flat_fb = traverse_util.flatten_dict(feedback)
    flat_p = traverse_util.flatten_dict(params)
    new = dict(flat_fb)
    paths = sorted(p for p in flat_fb if p[-1] == "B")
    for i, path in enumerate(paths):
        kpath = path[:-1] + ("kernel",)
        if kpath not in flat_p:
            raise ValueError(f"feedback {'/'.join(path)} has no kernel at {'/'.join(kpath)}")
        kernel, b = flat_p[kpath], flat_fb[path]
        lkey = jax.random.fold_in(key, i)

        def body(t, b, kernel=kernel, lkey=lkey):
            return b + mirror_delta(kernel, b, jax.random.fold_in(lkey, t), rule.noise_std,
                                    rule.mirror_lr, rule.mirror_decay, rule.mirror_batch)

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

    def mirror(self, params: dict, feedback: dict, key: Array) -> dict:
        """Mirror mode for all layers; see :func:`mirror_step`."""
        return mirror_step(self, params, feedback, key)
