"""alearn's paper models as ``alearn.models.create`` builds them: plain Flax modules wrapped
by ``alearn.wrap`` with their declared spec (the one path every model takes)."""

from __future__ import annotations

import alearn


def MLP(*, num_classes: int, **fields) -> alearn.Wrapped:  # noqa: N802 - the class it builds
    return alearn.models.create("mlp", num_classes, **fields)


def ResNet(*, num_classes: int, **fields) -> alearn.Wrapped:  # noqa: N802
    module = alearn.models.ResNet(num_classes=num_classes, **fields)
    return alearn.wrap(module, **alearn.models.wrap_spec(module))
