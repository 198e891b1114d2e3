"""Plain ``flax.linen`` twins of alearn's native MLP, CNN and ResNet (same parameter trees).

The twins use only ``flax.linen`` layers and name their modules like the native models, so
one variables dict (initialised by the native model for a rule) drives both: the wrapped
twin must then give exactly the native model's updates. The ResNet twin has the native
ResNet's block structure (conv3x3-BN-act, conv3x3-BN, projection shortcut conv1x1-BN when
the shape changes, act(h + shortcut)) at reduced depth and width for CI.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

import alearn

CLASSES = 5
MLP_WIDTHS = (12, 10)
CNN_KW = dict(conv_widths=(4, 6), conv_strides=(1, 2), dense_widths=(8,))
RESNET_KW = dict(stage_sizes=(1, 2), widths=(4, 6))


class PlainMLP(nn.Module):
    widths: tuple = MLP_WIDTHS
    num_classes: int = CLASSES

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(self.num_classes)(x)


class PlainCNN(nn.Module):
    conv_widths: tuple = CNN_KW["conv_widths"]
    conv_strides: tuple = CNN_KW["conv_strides"]
    dense_widths: tuple = CNN_KW["dense_widths"]
    num_classes: int = CLASSES

    @nn.compact
    def __call__(self, x):
        for i, (w, s) in enumerate(zip(self.conv_widths, self.conv_strides)):
            x = nn.relu(nn.Conv(w, (3, 3), strides=(s, s), padding="SAME", name=f"conv{i}")(x))
        x = x.reshape((x.shape[0], -1))
        for j, w in enumerate(self.dense_widths):
            x = nn.relu(nn.Dense(w, name=f"fc{j}")(x))
        return nn.Dense(self.num_classes, name="classifier")(x)


def _bn(train, name):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class PlainBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        s = (self.strides, self.strides)
        h = nn.Conv(self.features, (3, 3), s, padding=1, use_bias=False, name="conv1")(x)
        h = nn.relu(_bn(train, "bn1")(h))
        h = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(h)
        h = _bn(train, "bn2")(h)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), s, padding=0, use_bias=False,
                        name="shortcut_conv")(x)
            x = _bn(train, "shortcut_bn")(x)
        return nn.relu(h + x)


class PlainResNet(nn.Module):
    stage_sizes: tuple = RESNET_KW["stage_sizes"]
    widths: tuple = RESNET_KW["widths"]
    num_classes: int = CLASSES

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.widths[0], (3, 3), padding=1, use_bias=False, name="stem_conv")(x)
        x = nn.relu(_bn(train, "stem_bn")(x))
        for s, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
            for b in range(n):
                x = PlainBlock(w, 2 if (s > 0 and b == 0) else 1, name=f"stage{s}_block{b}")(
                    x, train=train)
        return nn.Dense(self.num_classes, name="classifier")(x.mean(axis=(1, 2)))


def pair(kind: str):
    """(alearn model as ``create`` builds it, plain Flax twin, x, y) for kind mlp / cnn /
    resnet."""
    kx, ky = jax.random.split(jax.random.key(7))
    y = jax.random.randint(ky, (6,), 0, CLASSES)
    if kind == "mlp":
        return (alearn.models.create("mlp", CLASSES, widths=MLP_WIDTHS), PlainMLP(),
                jax.random.normal(kx, (6, 9)), y)
    x = jax.random.normal(kx, (6, 8, 8, 3))
    if kind == "cnn":
        return alearn.models.create("cnn", CLASSES, **CNN_KW), PlainCNN(), x, y
    module = alearn.models.ResNet(num_classes=CLASSES, **RESNET_KW)
    return alearn.wrap(module, **alearn.models.wrap_spec(module)), PlainResNet(), x, y


def max_diff(a, b) -> float:
    diffs = jax.tree.leaves(jax.tree.map(lambda u, v: jnp.max(jnp.abs(u - v)), a, b))
    return float(max(diffs))


def max_abs(a) -> float:
    return float(max(jnp.max(jnp.abs(u)) for u in jax.tree.leaves(a)))


# --- NNX twins (same layer names as the native models' parameter trees) -------------------

def nnx_pair(kind: str):
    """(native model, NNX twin class, x, y) for kind mlp / cnn."""
    from flax import nnx  # pylint: disable=import-outside-toplevel

    class NnxMLP(nnx.Module):
        def __init__(self, rngs):
            dims = (9, *MLP_WIDTHS, CLASSES)
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
                setattr(self, f"Dense_{i}", nnx.Linear(a, b, rngs=rngs))
            self.n = len(dims) - 1

        def __call__(self, x):
            x = x.reshape((x.shape[0], -1))
            for i in range(self.n):
                x = getattr(self, f"Dense_{i}")(x)
                x = nnx.relu(x) if i < self.n - 1 else x
            return x

    class NnxCNN(nnx.Module):
        def __init__(self, rngs):
            (w0, w1), (s0, s1) = CNN_KW["conv_widths"], CNN_KW["conv_strides"]
            self.conv0 = nnx.Conv(3, w0, (3, 3), strides=s0, padding="SAME", rngs=rngs)
            self.conv1 = nnx.Conv(w0, w1, (3, 3), strides=s1, padding="SAME", rngs=rngs)
            self.fc0 = nnx.Linear(4 * 4 * w1, CNN_KW["dense_widths"][0], rngs=rngs)
            self.classifier = nnx.Linear(CNN_KW["dense_widths"][0], CLASSES, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.conv1(nnx.relu(self.conv0(x))))
            x = nnx.relu(self.fc0(x.reshape((x.shape[0], -1))))
            return self.classifier(x)

    native, _, x, y = pair(kind)
    return native, (NnxMLP if kind == "mlp" else NnxCNN), x, y


def load_into_nnx(wrapped, variables: dict) -> set:
    """Copies alearn's variables dict (params + feedback) into an NNX-wrapped twin; returns
    the layers whose feedback the twin does not hold."""
    dropped = set()
    for coll in ("params", "feedback"):
        for layer, leaves in variables.get(coll, {}).items():
            module = getattr(wrapped.model, layer)
            for name, value in leaves.items():
                if coll == "feedback" and not hasattr(module, name):
                    dropped.add(layer)
                    continue
                getattr(module, name)[...] = value
    return dropped


def nnx_as_native(grads) -> dict:
    """An NNX grads State -> {"params": ..., "feedback": ...} like the native updates."""
    out = {"params": {}}
    for layer, leaves in grads.to_pure_dict()["model"].items():
        for name, value in leaves.items():
            coll = "params" if name in ("kernel", "bias") else "feedback"
            out.setdefault(coll, {}).setdefault(layer, {})[name] = value
    return out
