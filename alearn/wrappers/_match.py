"""Module-path patterns (``blocks=``, ``receivers=``, ``exclude=``)."""

from __future__ import annotations

import fnmatch


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
