"""Module-path patterns (``blocks=``, ``receivers=``, ``exclude=``) and which array a
layer reads (DFA's "who sends δ_L D to this input")."""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence


def path_matches(path: str, pattern: str) -> bool:
    """Glob match per path segment: ``*`` never crosses "/" (``"stage*_block*"`` matches
    ``stage1_block0`` but not its submodule ``stage1_block0/conv1``)."""
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(
        fnmatch.fnmatchcase(a, p) for a, p in zip(parts, pats))


def param_matches(path: str, pattern: str) -> bool:
    """``exclude=`` patterns: a parameter path matches a pattern or lies below a module
    path that matches it (``"head"`` excludes ``head/kernel`` and ``head/bias``)."""
    parts = path.split("/")
    return any(path_matches("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1))


def input_source(x: Any, inputs: Sequence[Any], received: Sequence[tuple],
                 seen: Sequence[tuple]) -> str:
    """Where the array a layer reads comes from, judged by identity: "model input" (its
    signal would be discarded), "receiver <path>" (a receiver delivers δ_L D there),
    "shared with <path>" (an earlier layer read the same array and sends for it) or "own"
    (this layer sends δ_L D). ``received``/``seen``: (array, path) pairs so far."""
    if any(a is x for a in inputs):
        return "model input"
    for arr, at in received:
        if arr is x:
            return f"receiver {at}"
    for arr, by in seen:
        if arr is x:
            return f"shared with {by}"
    return "own"
