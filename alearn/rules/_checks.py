"""Hyperparameter validation shared by the rules' ``__post_init__`` methods.

Every check raises ``ValueError`` naming the rule, the field, the bad value and what is
accepted, so a typo in a config fails at construction, not deep inside a jitted step.
"""

from __future__ import annotations

import math
from typing import Any, Iterable


def _finite_number(rule: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"rule {rule!r}: {field}={value!r} must be a finite number")
    return float(value)


def positive(rule: str, field: str, value: Any) -> None:
    """``value`` must be a finite number > 0."""
    if _finite_number(rule, field, value) <= 0:
        raise ValueError(f"rule {rule!r}: {field}={value!r} must be > 0")


def non_negative(rule: str, field: str, value: Any) -> None:
    """``value`` must be a finite number >= 0."""
    if _finite_number(rule, field, value) < 0:
        raise ValueError(f"rule {rule!r}: {field}={value!r} must be >= 0")


def positive_int(rule: str, field: str, value: Any) -> None:
    """``value`` must be an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"rule {rule!r}: {field}={value!r} must be an integer >= 1")


def choice(rule: str, field: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(
            f"rule {rule!r}: {field}={value!r} is not valid; choose one of: {', '.join(choices)}"
        )
