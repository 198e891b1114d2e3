"""Models from the papers, as plain ``flax.linen`` modules, and ``create`` to build one.

Every model class here (``MLP``, ``CNN``, ``AlexNet``, ``VGG``, ``ResNet``, ``FlaxCNN``)
is ordinary Flax: ``nn.Dense``, ``nn.Conv``, ``nn.BatchNorm``, no alearn layer and no
rule argument, so it can be copied into any project. ``create(name, num_classes,
**overrides)`` builds one by name and returns it wrapped by :func:`alearn.wrap` with the
model's declared spec (e.g. :func:`alearn.models.resnet.wrap_spec`: its blocks and DFA
receivers), so ``create(...).apply(v, x, rule=rule, train=...)`` trains by any rule, the
same path a user's own model takes (see docs/notes/models.md for architectures, grouping
and parameter counts). :func:`convert_variables` brings variables written by alearn
versions whose models placed DFA receivers by hand to the current feedback layout.
"""

from __future__ import annotations

import dataclasses
import functools
from types import MappingProxyType

import flax.linen as nn

from alearn.al.models import BASELINES as _AL_BASELINES
from alearn.models._convert import convert_variables
from alearn.models._count import num_params
from alearn.models.alexnet import AlexNet
from alearn.models.cnn import CNN
from alearn.models.flax_cnn import FlaxCNN
from alearn.models.mlp import MLP
from alearn.models.resnet import BasicBlock, ResNet
from alearn.models.resnet import wrap_spec as _resnet_spec
from alearn.models.vgg import VGG, VGG16_CONFIG
from alearn.wrappers.linen import Wrapped, wrap

_RESNET18 = dict(stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512))

# name -> module class (or a partial of one fixing the architecture). Read-only.
MODELS = MappingProxyType({
    "mlp": MLP,
    "cnn": CNN,
    "alexnet": AlexNet,  # the authors' code: 5x5 kernels, BN on the logits
    "alexnet_thesis": functools.partial(AlexNet, kernel_size=3, output_bn=False),
    "vgg16": functools.partial(VGG, config=VGG16_CONFIG),
    "resnet20": functools.partial(ResNet, stage_sizes=(3, 3, 3), widths=(16, 32, 64)),
    "resnet32": functools.partial(ResNet, stage_sizes=(5, 5, 5), widths=(16, 32, 64)),
    "resnet18": functools.partial(ResNet, **_RESNET18),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512)),
    "resnet18_nsc": functools.partial(ResNet, shortcut=False, **_RESNET18),
    # a plain Flax model (the Flax examples' MNIST CNN) trained through alearn.wrap
    "flax_cnn": FlaxCNN,
    # BP twins of the Associated Learning models (parameter-matched; alearn/al/models.py)
    **_AL_BASELINES,
})


def names() -> list[str]:
    """The valid model names."""
    return sorted(MODELS)


def _fields(factory) -> list[str]:
    cls = factory.func if isinstance(factory, functools.partial) else factory
    cls = getattr(factory, "module_class", cls)
    return sorted(f.name for f in dataclasses.fields(cls)
                  if f.init and f.name not in ("parent", "name", "num_classes"))


def wrap_spec(module: nn.Module) -> dict:
    """The ``alearn.wrap`` arguments a paper model declares (``{}`` for plain chains)."""
    if isinstance(module, ResNet):
        return _resnet_spec(module)
    return {}


def create(name: str, num_classes: int, **overrides) -> Wrapped:
    """Builds model ``name`` with ``num_classes`` outputs; ``overrides`` set its fields.

    Returns the plain Flax module wrapped by :func:`alearn.wrap` with its
    :func:`wrap_spec` (``.model`` is the module itself).

    Lists in ``overrides`` (as config files give them) become tuples, so the module stays
    hashable.

    Raises:
      ValueError: unknown model name or field; the message lists the valid ones.
    """
    key = str(name).lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(names())}")
    factory = MODELS[key]
    valid = _fields(factory)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)} for model {key!r}; valid: {', '.join(valid)}"
        )
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    module = factory(num_classes=num_classes, **overrides)
    if isinstance(module, Wrapped):  # registered wrapped already (the AL twins)
        return module
    # The init-time coverage / shortcut trace is skipped for these fixed models: every one of
    # them passes it under every rule (tests/test_models.py), and it costs a trace per init.
    return Wrapped(module, check=False, **wrap_spec(module))


__all__ = [
    "AlexNet", "BasicBlock", "CNN", "FlaxCNN", "MLP", "MODELS", "ResNet", "VGG", "VGG16_CONFIG",
    "convert_variables", "create", "names", "num_params", "wrap_spec",
]
