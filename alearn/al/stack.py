"""``Stack``: a small layer-spec interpreter used for every AL function and its BP twin.

The AL models (f, g, h, b of every block) and their parameter-matched BP baselines are
described by the same tuples of layer specs, so "BP and AL have the same parameter
count" holds by construction (thesis Ch. 3). ``Stack`` and ``MatchedBP`` are plain
``flax.linen`` modules (``nn.Dense``, ``nn.Conv``, ``nn.BatchNorm``; no rule argument):
inside an AL block they learn by ``jax.grad`` of the block's local losses; the BP
baseline learns by any rule through :func:`alearn.wrap` (``alearn.models.create("al_mlp",
10)``; :data:`alearn.al.models.BASELINES`). A residual block's input passes through a
parameterless :class:`BlockInput` named ``block<i>``, the module path
``alearn.wrap(blocks=...)`` matches (activation-sharing groups, DFA receivers), so the
parameter tree is the flat ``Conv_k`` / ``BatchNorm_k`` / ``Dense_k`` of the layer order.
Convolutions compute with :func:`exact_conv` (``lax.conv_general_dilated`` by the
per-shape fastest of alearn's exact forms on CPU, XLA's elsewhere:
:mod:`alearn._layers.conv_impl`).

Layer specs (tuples, hashable so they can be Flax module fields):

- ``("dense", width[, batchnorm])``: Dense, [BatchNorm], then the activation (BatchNorm:
  the authors' BP VGG / ResNet heads);
- ``("conv", features, stride, batchnorm)``: 3x3 SAME conv, [BatchNorm], activation;
- ``("res", features, stride[, pre_add_act])``: ResNet basic block (conv-BN-act, conv-BN,
  [act], projection 1x1 conv shortcut when the shape changes, add, act). ``pre_add_act``
  True is the authors' code, ``act(act(BN(conv2)) + x)``; False (or absent) is He et al.'s
  ``act(BN(conv2) + x)``;
- ``("maxpool",)``: 2x2/2 max pool; ``("avgpool",)``: global average pool;
- ``("flatten",)``;
- sequence kinds ``("embed", ...)``, ``("lstm", ...)``, ``("encoder", ...)``,
  ``("seqpool", ...)``: see :mod:`alearn.al.seq` (no activation applied; their BP twin
  trains by the bp rule only).

Every activated layer output is ``sow``-n into the ``"intermediates"`` collection as
``layer<k>`` (k counts weight layers from 1), which the metafeature analysis reads.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from alearn.al import seq
from alearn._layers import initializers, max_pool
from alearn._layers.linear import rule_linear
from alearn._layers.ops import ConvOp
from alearn.rules.bp import BP

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "elu": nn.elu,
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
    "linear": lambda x: x,
}
SPEC_KINDS = ("dense", "conv", "res", "maxpool", "avgpool", "flatten") + seq.SEQ_KINDS
_SOWN_SEQ = ("embed", "lstm", "encoder")  # sequence layers sown as layer<k> (features only)
HE_NORMAL = initializers.he_normal  # flat draw: fast to compile


def activation(name: str) -> Callable[[Array], Array]:
    """The activation function called ``name``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def exact_conv(lhs: Array, rhs: Array, window_strides: Any, padding: Any,
               lhs_dilation: Any = None, rhs_dilation: Any = None,
               dimension_numbers: Any = None, feature_group_count: int = 1,
               precision: Any = None, **kwargs: Any) -> Array:
    """``lax.conv_general_dilated`` for ``nn.Conv(conv_general_dilated=...)``.

    A plain 2-D NHWC convolution (the layer specs' only kind) and its two transposes are
    computed by :class:`alearn._layers.ConvOp` (``impl="auto"``: on CPU the per-shape
    fastest of XLA's convolution and the exact im2col / banded matrix-product forms, XLA's
    elsewhere), differentiated exactly (BP); anything else goes to ``lax``. These are the
    numbers and the speed of alearn's convolution layers that the AL blocks used before they
    were written as plain Flax. ``alearn.wrap`` replaces this function by the rule's map.
    """
    plain = (lhs.ndim == 4 and feature_group_count == 1 and precision is None and not kwargs
             and all(v is None or all(int(d) == 1 for d in v)
                     for v in (lhs_dilation, rhs_dilation))
             and dimension_numbers is not None
             and tuple(dimension_numbers.lhs_spec) == (0, 3, 1, 2)
             and tuple(dimension_numbers.rhs_spec) == (3, 2, 0, 1)
             and tuple(dimension_numbers.out_spec) == (0, 3, 1, 2))
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision, **kwargs)
    pad = padding if isinstance(padding, str) else tuple(tuple(int(v) for v in p)
                                                          for p in padding)
    op = ConvOp(in_shape=tuple(lhs.shape), kernel_shape=tuple(rhs.shape), dtype=rhs.dtype,
                strides=tuple(int(v) for v in window_strides), padding=pad)
    return rule_linear(BP(), op, lhs, rhs, {}, None, None)[0]


class BlockInput(nn.Module):
    """The identity, at a residual block's input (no parameters, so not in the variables).

    Its module path (``.../block<i>``) is what ``alearn.wrap(blocks=...)`` matches: the
    block input starts an activation-sharing group and, for DFA, receives ``δ_L D``.
    """

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return x


def num_weight_layers(layers: tuple) -> int:
    """Weight layers in ``layers`` as the thesis counts them (a res block counts 2)."""
    return sum({"dense": 1, "conv": 1, "res": 2, "embed": 1, "lstm": 1, "encoder": 1}.get(
        spec[0], 0) for spec in layers)


class Stack(nn.Module):
    """Applies ``layers`` (specs above) with ``act``; ``final_act`` on the last layer.

    ``final_act=None`` keeps ``act`` on the last weight layer too. ``bn_axis_name``: a
    mapped axis (``shard_map``/``pmap``) over which training-mode BatchNorm averages its
    batch statistics (synchronised BatchNorm: the statistics of the whole batch split over
    that axis; the AL pipeline's ``data`` axis sets it). Called as ``stack(x, train=...)``.
    Parameters: ``Dense_k``, ``Conv_k``, ``BatchNorm_k`` numbered in layer order (a res
    block: conv1, BN, conv2, BN, then the projection conv).
    """

    layers: tuple
    act: str = "elu"
    final_act: str | None = None
    kernel_init: Callable[..., Array] = HE_NORMAL
    bn_axis_name: str | None = None

    def _bn(self, x: Array, train: bool) -> Array:
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                            axis_name=self.bn_axis_name)(x)

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        act = activation(self.act)
        last = max((i for i, s in enumerate(self.layers) if s[0] in ("dense", "conv", "res")),
                   default=-1)
        k = 0
        for i, spec in enumerate(self.layers):
            kind = spec[0]
            fn = activation(self.final_act) if (i == last and self.final_act) else act
            if kind == "dense":
                x = x.reshape(x.shape[0], -1) if x.ndim > 2 else x
                x = nn.Dense(spec[1], kernel_init=self.kernel_init)(x)
                x = fn(self._bn(x, train) if len(spec) > 2 and spec[2] else x)
            elif kind == "conv":
                _, feats, stride, bn = spec
                x = self._conv(feats, (3, 3), stride)(x)
                x = fn(self._bn(x, train) if bn else x)
            elif kind == "res":
                x = BlockInput(name=f"block{i}")(x)
                x = self._res(x, spec[1], spec[2], fn, train,
                              pre_add_act=len(spec) > 3 and bool(spec[3]))
            elif kind == "maxpool":
                x = max_pool(x, (2, 2), (2, 2))
            elif kind == "avgpool":
                x = jnp.mean(x, axis=(1, 2))
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind in seq.SEQ_KINDS:
                x = seq.apply_spec(spec, x)
            else:
                raise ValueError(f"unknown layer spec {spec!r}; kinds: {', '.join(SPEC_KINDS)}")
            if kind in ("dense", "conv", "res"):
                k += 2 if kind == "res" else 1
                self.sow("intermediates", f"layer{k}", x)
            elif kind in _SOWN_SEQ:
                k += 1
                self.sow("intermediates", f"layer{k}", seq.split(x)[0])
        return x

    def _conv(self, feats: int, kernel: tuple[int, int], stride: int) -> nn.Conv:
        return nn.Conv(feats, kernel, (stride, stride), padding="SAME",
                       kernel_init=self.kernel_init, conv_general_dilated=exact_conv)

    def _res(self, x: Array, feats: int, stride: int, fn: Callable, train: bool,
             pre_add_act: bool = False) -> Array:
        """ResNet basic block (He et al. 2016, option B projection shortcut).

        ``pre_add_act``: also activate the residual branch before the add (authors' code).
        """
        act = activation(self.act)
        y = self._conv(feats, (3, 3), stride)(x)
        y = act(self._bn(y, train))
        y = self._conv(feats, (3, 3), 1)(y)
        y = self._bn(y, train)
        if pre_add_act:
            y = act(y)
        if stride != 1 or x.shape[-1] != feats:
            x = self._conv(feats, (1, 1), stride)(x)
        return fn(y + x)


class MatchedBP(nn.Module):
    """The BP baseline of an AL model: its prediction path as one feed-forward net.

    ``layers`` is f_1 … f_N, b_N, h_N … h_1 flattened (thesis Sec. 2.6 / Ch. 3: "we
    increased the number of layers in the baseline so that both have identical
    parameters"); ReLU everywhere, linear logits. Plain Flax:
    ``model.apply(variables, x, train=train)``. Trained by a rule through
    ``alearn.wrap(model, blocks=("net/block*",))`` (the residual blocks' inputs; no
    ``blocks`` without "res" layers), as :data:`alearn.al.models.BASELINES` does.
    """

    num_classes: int
    layers: tuple = ()
    act: str = "relu"
    kernel_init: Callable[..., Array] = HE_NORMAL

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        logits = Stack(self.layers, self.act, "linear", self.kernel_init, name="net")(
            x, train=train)
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"MatchedBP output width {logits.shape[-1]} != num_classes "
                             f"{self.num_classes}; last layer spec is {self.layers[-1]!r}")
        return logits
