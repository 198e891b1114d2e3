"""``Stack``: a small layer-spec interpreter used for every AL function and its BP twin.

The AL models (f, g, h, b of every block) and their parameter-matched BP baselines are
described by the same tuples of layer specs, so "BP and AL have the same parameter
count" holds by construction (thesis Ch. 3). Layers are the rule-pluggable
``alearn.layers.Dense`` / ``Conv``: inside an AL block they run under the BP rule (plain
``jax.grad`` inside the block), in the BP baseline under whatever rule the trainer passes.

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
  ``("seqpool", ...)``: see :mod:`alearn.al.seq` (no activation applied; the BP rule only).

Every activated layer output is ``sow``-n into the ``"intermediates"`` collection as
``layer<k>`` (k counts weight layers from 1), which the metafeature analysis reads.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from alearn.al import seq
from alearn.layers import Conv, Dense, Tape, initializers, max_pool
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


def num_weight_layers(layers: tuple) -> int:
    """Weight layers in ``layers`` as the thesis counts them (a res block counts 2)."""
    return sum({"dense": 1, "conv": 1, "res": 2, "embed": 1, "lstm": 1, "encoder": 1}.get(
        spec[0], 0) for spec in layers)


class Stack(nn.Module):
    """Applies ``layers`` (specs above) with ``act``; ``final_act`` on the last layer.

    ``final_act=None`` keeps ``act`` on the last weight layer too. Called as
    ``stack(x, train=..., tape=...)``; without a tape the BP rule is used.
    """

    layers: tuple
    act: str = "elu"
    final_act: str | None = None
    kernel_init: Callable[..., Array] = HE_NORMAL

    def _bn(self, x: Array, train: bool) -> Array:
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, tape: Tape | None = None) -> Array:
        tape = tape if tape is not None else Tape(BP(), x.shape[0], 1)
        if any(spec[0] in seq.SEQ_KINDS for spec in self.layers):
            seq.check_rule(tape.rule)
        act = activation(self.act)
        last = max((i for i, s in enumerate(self.layers) if s[0] in ("dense", "conv", "res")),
                   default=-1)
        k = 0
        for i, spec in enumerate(self.layers):
            kind = spec[0]
            fn = activation(self.final_act) if (i == last and self.final_act) else act
            if kind == "dense":
                x = x.reshape(x.shape[0], -1) if x.ndim > 2 else x
                x = Dense(spec[1], kernel_init=self.kernel_init)(x, tape)
                x = fn(self._bn(x, train) if len(spec) > 2 and spec[2] else x)
            elif kind == "conv":
                _, feats, stride, bn = spec
                x = Conv(feats, (3, 3), (stride, stride), kernel_init=self.kernel_init)(x, tape)
                x = fn(self._bn(x, train) if bn else x)
            elif kind == "res":
                x = self._res(x, spec[1], spec[2], fn, train, tape,
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

    def _res(self, x: Array, feats: int, stride: int, fn: Callable, train: bool,
             tape: Tape, pre_add_act: bool = False) -> Array:
        """ResNet basic block (He et al. 2016, option B projection shortcut).

        ``pre_add_act``: also activate the residual branch before the add (authors' code).
        """
        tape.block(x)
        act = activation(self.act)
        y = Conv(feats, (3, 3), (stride, stride), kernel_init=self.kernel_init)(x, tape)
        y = act(self._bn(y, train))
        y = Conv(feats, (3, 3), (1, 1), kernel_init=self.kernel_init)(y, tape)
        y = self._bn(y, train)
        if pre_add_act:
            y = act(y)
        if stride != 1 or x.shape[-1] != feats:
            x = Conv(feats, (1, 1), (stride, stride), kernel_init=self.kernel_init)(x, tape)
        return fn(y + x)


class MatchedBP(nn.Module):
    """The BP baseline of an AL model: its prediction path as one feed-forward net.

    ``layers`` is f_1 … f_N, b_N, h_N … h_1 flattened (thesis Sec. 2.6 / Ch. 3: "we
    increased the number of layers in the baseline so that both have identical
    parameters"); ReLU everywhere, linear logits. Follows the alearn model convention
    ``model.apply(variables, x, rule=rule, train=train)``.
    """

    num_classes: int
    layers: tuple = ()
    act: str = "relu"
    kernel_init: Callable[..., Array] = HE_NORMAL

    @nn.compact
    def __call__(self, x: Array, *, rule: Any = BP(), train: bool = False) -> Array:
        tape = Tape(rule, x.shape[0], self.num_classes)
        logits = Stack(self.layers, self.act, "linear", self.kernel_init, name="net")(
            x, train=train, tape=tape)
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"MatchedBP output width {logits.shape[-1]} != num_classes "
                             f"{self.num_classes}; last layer spec is {self.layers[-1]!r}")
        return tape.finish(logits)
