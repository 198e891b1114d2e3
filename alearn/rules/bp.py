"""Backpropagation: the reference rule (ASAP thesis eqs. 2.1-2.3)."""

from __future__ import annotations

import dataclasses

from alearn.rules.base import Rule


@dataclasses.dataclass(frozen=True)
class BP(Rule):
    """Exact backpropagation: error sent down through W^T, update δ_l h_{l-1}^T.

    Through the rule-pluggable layers this equals ``jax.grad`` of the plain model.
    """

    name = "bp"
