"""The thesis' AL models and their BP baselines (matched twins or the code's), one spec each.

Block boundaries (thesis Ch. 3 and the seed code; ``w`` = width multiplier applied to
every width):

- ``al_mlp`` (MNIST MLP 1024-1024-5120-1024-1024-10): 2 blocks, f_i = Dense(1024) ELU,
  y width 1024, bridge Dense(5120)-Dense(1024) sigmoid, h_2 1024->1024, h_1 1024->10.
  BP twin: 1024-1024-5120-1024-1024-10 ReLU — exactly the thesis MLP.
- ``al_cnn`` (14 layers): 4 blocks of 2 convs 3x3 (32, 32 | 32, 32/2 | 64, 64 | 64, 64/2),
  y width 256, bridge flatten-Dense(1280)-Dense(256). BP twin: 8 convs, FC1280,
  4x FC256, FC10 — exactly the thesis CNN.
- ``al_vgg``: blocks [c128 c256 pool] [c256 c512 pool] [c512 pool c512 pool]
  [flatten FC1024 FC1024], y width 300 (``y_width``; the code: 300 on CIFAR-10, 500 on
  CIFAR-100), bridge flatten-Dense(5y)-Dense(y).
- ``al_resnet20`` / ``al_resnet32`` (n = 3 / 5): blocks [conv16+BN] [stage 16 x n]
  [stage 32 x n, /2] [stage 64 x n, /2], y width 300 (500 on CIFAR-100). Options (the
  authors' code is the default): ``bridge="flatten"`` (b_i flattens the whole feature map
  into Dense(5y)-Dense(y); ``"avgpool"`` pools globally first, keeping b_1 small) and
  ``res_act="both"`` (residual block ``act(act(BN(conv2)) + x)``; ``"after"`` is He et
  al.'s ``act(BN(conv2) + x)``).
- ``al_lstm`` / ``al_transformer`` (sequences, :mod:`alearn.al.seq`): ``depth`` (3) blocks;
  f_1 = input embedding (token ids, 0 = padding, ``vocab_size`` 260 = bytes + 4
  specials; or image rows) + one LSTM layer / ``layers_per_block`` (1) pre-LN encoder
  layers (``heads`` 4, MLP 2x width, learned positions up to ``max_len`` 512), f_i (i > 1)
  the same layer(s) alone; width 128, y width 128; bridge b_i = masked mean over time
  (``pool="mean"``; ``"last"`` = the LSTM's last real state) then Dense(y). BP twin:
  embedding, the N LSTM / encoder layers, pool, Dense(y), (N-1)x Dense(y), logits.
- ``al_sigmoid_mlp``: the sigmoid experiment: ``depth`` (4) blocks of ``layers_per_block``
  (3) Dense(width) sigmoid layers, y width = width, bridge one Dense(width). BP twin:
  4·3 + 1 + 3 + 1 = 17 sigmoid layers; each AL gradient path crosses at most 4.

The BP twin of every model is f_1 … f_N, b_N, h_N … h_1 as one feed-forward net
(:class:`alearn.al.stack.MatchedBP`): equal parameter counts by construction
(``baseline="matched"``, default). The twins are plain Flax (:class:`ALBaseline`);
:data:`BASELINES` builds each wrapped by :func:`alearn.wrap` (the residual blocks' inputs
``bp/net/block*`` as ``blocks=``), so it trains by any rule; the sequence twins (LSTM,
attention layers learning by autodiff) by the bp rule only.

``baseline="authors"`` is the BP net of the authors' code instead (He-normal init here;
the code leaves its BP VGG dense layers at glorot): for VGG, BatchNorm on every layer and
no FC1024-FC1024 (convs, then Dense(5y)-Dense(y)-3x Dense(y), each with BN, then the
logits); for ResNet, the same
residual stages, global average pool, then the same BN dense head. Those two are *not*
parameter-matched (VGG on CIFAR-10: 10,596,070 vs AL's 12,198,094 effective). The code's
MLP and CNN baselines are the matched twins, so ``"authors"`` equals ``"matched"`` there.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Callable

import flax.linen as nn
import optax

from alearn.al import seq
from alearn.al.block import BlockDef
from alearn.al.network import ALNetwork
from alearn.al.stack import MatchedBP, Stack
from alearn.rules.bp import BP
from alearn.wrappers.linen import Wrapped


@dataclasses.dataclass(frozen=True)
class ALSpec:
    """Layer specs of an AL model (see :mod:`alearn.al.stack` for the spec tuples)."""

    f_layers: tuple  # per block: a tuple of layer specs
    bridges: tuple  # per block: a tuple of layer specs ending at y_width
    y_width: int
    f_act: str = "elu"
    y_act: str = "sigmoid"
    b_act: str = "sigmoid"
    bp_act: str = "relu"


def _w(x: int, m: float) -> int:
    return max(1, int(round(x * m)))


def mlp_spec(width_multiplier: float = 1.0, width: int = 1024) -> ALSpec:
    w = _w(width, width_multiplier)
    bridge = (("dense", 5 * w), ("dense", w))
    return ALSpec(((("dense", w),), (("dense", w),)), (bridge, bridge), w)


def cnn_spec(width_multiplier: float = 1.0, y_width: int = 256) -> ALSpec:
    c1, c2, y = _w(32, width_multiplier), _w(64, width_multiplier), _w(y_width, width_multiplier)
    conv = lambda c, s=1: ("conv", c, s, False)  # noqa: E731
    f = ((conv(c1), conv(c1)), (conv(c1), conv(c1, 2)), (conv(c2), conv(c2)),
         (conv(c2), conv(c2, 2)))
    bridge = (("flatten",), ("dense", 5 * y), ("dense", y))
    return ALSpec(f, (bridge,) * 4, y)


BRIDGES = ("flatten", "avgpool")
RES_ACTS = ("both", "after")
BASELINE_KINDS = ("matched", "authors")


def _choice(name: str, value: str, valid: tuple) -> str:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(valid)}")
    return value


def vgg_spec(width_multiplier: float = 1.0, y_width: int = 300) -> ALSpec:
    c = lambda n: ("conv", _w(n, width_multiplier), 1, False)  # noqa: E731
    pool, y, d = ("maxpool",), _w(y_width, width_multiplier), _w(1024, width_multiplier)
    f = ((c(128), c(256), pool), (c(256), c(512), pool), (c(512), pool, c(512), pool),
         (("flatten",), ("dense", d), ("dense", d)))
    bridge = (("flatten",), ("dense", 5 * y), ("dense", y))
    return ALSpec(f, (bridge,) * 4, y)


def resnet_spec(n: int, width_multiplier: float = 1.0, y_width: int = 300,
                bridge: str = "flatten", res_act: str = "both") -> ALSpec:
    c = [_w(k, width_multiplier) for k in (16, 32, 64)]
    pre = _choice("res_act", res_act, RES_ACTS) == "both"
    stage = lambda ch, s: (("res", ch, s, pre),) + (("res", ch, 1, pre),) * (n - 1)  # noqa: E731
    f = ((("conv", c[0], 1, True),), stage(c[0], 1), stage(c[1], 2), stage(c[2], 2))
    y = _w(y_width, width_multiplier)
    first = ("flatten",) if _choice("bridge", bridge, BRIDGES) == "flatten" else ("avgpool",)
    b = (first, ("dense", 5 * y), ("dense", y))
    return ALSpec(f, (b,) * 4, y)


def sigmoid_mlp_spec(width_multiplier: float = 1.0, depth: int = 4, width: int = 256,
                     layers_per_block: int = 3) -> ALSpec:
    w = _w(width, width_multiplier)
    bridge = (("dense", w),)
    f = ((("dense", w),) * layers_per_block,) * depth
    return ALSpec(f, (bridge,) * depth, w, f_act="sigmoid", bp_act="sigmoid")


def _seq_bridge(pool: str, y: int) -> tuple:
    return (("seqpool", _choice("pool", pool, seq.POOLS)), ("dense", y))


def lstm_spec(width_multiplier: float = 1.0, depth: int = 3, width: int = 128,
              y_width: int = 128, vocab_size: int = 260, pool: str = "mean") -> ALSpec:
    """AL LSTM: block 1 = embedding + LSTM, blocks 2..depth = LSTM; b_i = pool + Dense(y)."""
    w, y = _w(width, width_multiplier), _w(y_width, width_multiplier)
    f = ((("embed", w, vocab_size, 0), ("lstm", w)),) + ((("lstm", w),),) * (depth - 1)
    return ALSpec(f, (_seq_bridge(pool, y),) * depth, y)


def transformer_spec(width_multiplier: float = 1.0, depth: int = 3, width: int = 128,
                     y_width: int = 128, vocab_size: int = 260, max_len: int = 512,
                     heads: int = 4, layers_per_block: int = 1, pool: str = "mean") -> ALSpec:
    """AL Transformer: block 1 = embedding (learned positions, ``max_len``) + encoder
    layer(s), blocks 2..depth = ``layers_per_block`` encoder layers; b_i = masked mean +
    Dense(y). MLP width 2x the model width."""
    if pool != "mean":
        raise ValueError(f"al_transformer pools by the masked mean; got pool={pool!r} (the "
                         f"last position of a Transformer is not its summary); choose: mean")
    w, y = _w(width, width_multiplier), _w(y_width, width_multiplier)
    enc = (("encoder", heads, 2 * w),) * layers_per_block
    f = ((("embed", w, vocab_size, max_len),) + enc,) + (enc,) * (depth - 1)
    return ALSpec(f, (_seq_bridge(pool, y),) * depth, y)


SPECS: MappingProxyType[str, Callable[..., ALSpec]] = MappingProxyType({
    "al_mlp": mlp_spec,
    "al_cnn": cnn_spec,
    "al_vgg": vgg_spec,
    "al_resnet20": lambda width_multiplier=1.0, **kw: resnet_spec(3, width_multiplier, **kw),
    "al_resnet32": lambda width_multiplier=1.0, **kw: resnet_spec(5, width_multiplier, **kw),
    "al_sigmoid_mlp": sigmoid_mlp_spec,
    "al_lstm": lstm_spec,
    "al_transformer": transformer_spec,
})


def spec(name: str, **overrides) -> ALSpec:
    """The :class:`ALSpec` of model ``name`` (``overrides``: width_multiplier, widths, depth)."""
    key = str(name).lower()
    if key not in SPECS:
        raise ValueError(f"unknown AL model {name!r}; choose one of: {', '.join(sorted(SPECS))}")
    return SPECS[key](**overrides)


def network(sp: ALSpec, num_classes: int, input_shape: tuple[int, ...], *,
            lr: float | optax.Schedule = 1e-4, ae_lr_mult: float = 2.0,
            weight_decay: float = 0.0, assoc_trains_g: bool = False,
            assoc_reduction: str = "mean", l2_scope: str = "f",
            optimizer: Callable[..., optax.GradientTransformation] = optax.adam) -> ALNetwork:
    """Builds the :class:`ALNetwork` of ``sp``; ``lr`` may be an optax schedule."""
    ae_lr = (lambda t: ae_lr_mult * lr(t)) if callable(lr) else ae_lr_mult * lr
    n, blocks = len(sp.f_layers), []
    for i in range(n):
        y_prev = num_classes if i == 0 else sp.y_width
        blocks.append(BlockDef(
            f=Stack(sp.f_layers[i], sp.f_act),
            g=Stack((("dense", sp.y_width),), sp.y_act),
            h=Stack((("dense", y_prev),), sp.y_act),
            b=Stack(sp.bridges[i], sp.b_act),
            tx_forward=optimizer(lr), tx_ae=optimizer(ae_lr),
            assoc_trains_g=assoc_trains_g, assoc_reduction=assoc_reduction,
            weight_decay=weight_decay, l2_scope=l2_scope, name=f"block{i + 1}"))
    return ALNetwork(tuple(blocks), tuple(input_shape), num_classes)


def bp_layers(sp: ALSpec, num_classes: int) -> tuple:
    """f_1 … f_N, b_N, h_N … h_1 as one flat layer-spec tuple (the BP twin)."""
    layers = sum(sp.f_layers, ()) + sp.bridges[-1]
    layers += (("dense", sp.y_width),) * (len(sp.f_layers) - 1) + (("dense", num_classes),)
    return layers


def authors_bp_layers(name: str, sp: ALSpec, num_classes: int) -> tuple:
    """The authors' BP baseline of AL model ``name`` as a flat layer-spec tuple.

    VGG: the AL convs with BatchNorm on each, no FC1024 layers; ResNet: stem and stages,
    global average pool. Both then Dense(5y)-Dense(y)-3x Dense(y), each Dense + BN + act,
    and the logits. MLP / CNN / sigmoid MLP: the matched twin (the code's are exact).
    """
    y = sp.y_width
    head = (("dense", 5 * y, True), ("dense", y, True)) + (("dense", y, True),) * 3
    head += (("dense", num_classes),)
    key = str(name).lower()
    if key == "al_vgg":
        convs = tuple(("conv", l[1], l[2], True) if l[0] == "conv" else l
                      for l in sum(sp.f_layers[:3], ()))
        return convs + (("flatten",),) + head
    if key in ("al_resnet20", "al_resnet32"):
        return sum(sp.f_layers, ()) + (("avgpool",),) + head
    return bp_layers(sp, num_classes)


def bp_baseline(sp: ALSpec, num_classes: int, name: str = "", baseline: str = "matched"
                ) -> MatchedBP:
    """The BP baseline of ``sp``: parameter-matched (thesis Ch. 3) or the authors' code's."""
    if _choice("baseline", baseline, BASELINE_KINDS) == "authors":
        layers = authors_bp_layers(name, sp, num_classes)
    else:
        layers = bp_layers(sp, num_classes)
    return MatchedBP(num_classes=num_classes, layers=layers, act=sp.bp_act)


def create(name: str, num_classes: int, input_shape: tuple[int, ...], *,
           width_multiplier: float = 1.0, spec_overrides: dict | None = None,
           **network_kwargs) -> ALNetwork:
    """AL network ``name`` (e.g. "al_mlp") for ``num_classes`` and ``input_shape``."""
    sp = spec(name, width_multiplier=width_multiplier, **(spec_overrides or {}))
    return network(sp, num_classes, input_shape, **network_kwargs)


class ALBaseline(nn.Module):
    """The BP baseline of AL model ``model``, plain Flax (``apply(v, x, train=...)``).

    Registered in ``alearn.models`` under the AL model's name (wrapped, see
    :data:`BASELINES`), so ``--config.model=al_mlp --config.rule=bp`` (or any other rule)
    trains the BP twin of ``al_mlp``. The spec fields (width, y_width, bridge, ...) are the
    AL model's, so the twin follows them; ``baseline`` is "matched" (default) or "authors"
    (see the module docstring). Parameters: ``bp/net/{Dense,Conv,BatchNorm}_k``.
    """

    num_classes: int
    model: str = "al_mlp"
    width_multiplier: float = 1.0
    width: int = 0  # 0: the spec's default (al_mlp, al_sigmoid_mlp)
    depth: int = 0  # 0: the spec's default (al_sigmoid_mlp)
    layers_per_block: int = 0  # 0: the spec's default (al_sigmoid_mlp)
    y_width: int = 0  # 0: the spec's default (al_cnn, al_vgg, al_resnet*)
    bridge: str = ""  # "": the spec's default (al_resnet*)
    res_act: str = ""  # "": the spec's default (al_resnet*)
    vocab_size: int = 0  # 0: the spec's default (al_lstm, al_transformer: 260)
    max_len: int = 0  # 0: the spec's default (al_transformer: 512)
    heads: int = 0  # 0: the spec's default (al_transformer: 4)
    pool: str = ""  # "": the spec's default (al_lstm, al_transformer: "mean")
    baseline: str = "matched"

    @nn.nowrap
    def _spec(self) -> ALSpec:
        extra = {k: getattr(self, k) for k in SPEC_FIELDS if getattr(self, k)}
        return spec(self.model, width_multiplier=self.width_multiplier, **extra)

    @nn.nowrap
    def layers(self) -> tuple:
        """The twin's flat layer-spec tuple."""
        return bp_baseline(self._spec(), self.num_classes, self.model, self.baseline).layers

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        net = bp_baseline(self._spec(), self.num_classes, self.model, self.baseline)
        return net.copy(name="bp")(x, train=train)


# ALBaseline fields that are spec overrides (passed to ``spec`` when non-zero / non-empty).
SPEC_FIELDS = ("width", "depth", "layers_per_block", "y_width", "bridge", "res_act",
               "vocab_size", "max_len", "heads", "pool")


class BPOnly(Wrapped):
    """A wrapped BP twin whose layers learn by autodiff (LSTM, attention): ``init`` and
    ``apply`` accept the bp rule only (:func:`alearn.al.seq.check_rule`)."""

    def init(self, rngs, *args, rule=BP(), **kwargs):
        seq.check_rule(rule)
        return super().init(rngs, *args, rule=rule, **kwargs)

    def apply(self, variables, *args, rule=None, **kwargs):
        if rule is not None:
            seq.check_rule(rule)
        return super().apply(variables, *args, rule=rule, **kwargs)


def wrap_baseline(module: ALBaseline) -> Wrapped:
    """``module`` wrapped by :func:`alearn.wrap` so that any rule trains it: the inputs of
    its residual blocks (``bp/net/block*``) are ``blocks=`` (activation-sharing groups,
    DFA receivers); a sequence twin accepts the bp rule only (:class:`BPOnly`)."""
    kinds = {layer[0] for layer in module.layers()}
    blocks = ("bp/net/block*",) if "res" in kinds else ()
    cls = BPOnly if kinds & set(seq.SEQ_KINDS) else Wrapped
    return cls(module, blocks=blocks)


class BaselineFactory:
    """``factory(num_classes=..., **fields)``: the wrapped :class:`ALBaseline` of one AL
    model (``alearn.models`` registry; ``module_class`` lists the valid fields)."""

    module_class = ALBaseline

    def __init__(self, model: str):
        self.model = model

    def __call__(self, **fields) -> Wrapped:
        return wrap_baseline(ALBaseline(**{"model": self.model, **fields}))

    def __repr__(self) -> str:
        return f"BaselineFactory({self.model!r})"


# model name -> BP twin factory (num_classes, width_multiplier, ...) for alearn.models'
# registry: returns the wrapped ALBaseline.
BASELINES = MappingProxyType({name: BaselineFactory(name) for name in SPECS})
