"""Models from the papers, built only from rule-pluggable layers."""

from __future__ import annotations

from types import MappingProxyType

import flax.linen as nn

from alearn.models.mlp import MLP

MODELS = MappingProxyType({
    "mlp": MLP,
})


def names() -> list[str]:
    """The valid model names."""
    return sorted(MODELS)


def create(name: str, num_classes: int, **overrides) -> nn.Module:
    """Builds model ``name`` with ``num_classes`` outputs; ``overrides`` set its fields."""
    key = str(name).lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(names())}")
    return MODELS[key](num_classes=num_classes, **overrides)


__all__ = ["MLP", "MODELS", "create", "names"]
