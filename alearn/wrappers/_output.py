"""``output=``: the part of a model's output a rule is driven by (e.g. ``(logits, aux)``)."""

from __future__ import annotations

from typing import Any


def _path(selector: Any) -> tuple:
    if selector is None:
        return ()
    return tuple(selector) if isinstance(selector, tuple) else (selector,)


def get_output(out: Any, selector: Any, where: str) -> Any:
    """``out[selector...]``; a clear error when the selector does not fit the output."""
    for key in _path(selector):
        try:
            out = out[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"{where}: output={selector!r} does not select an array of the "
                             f"model output ({type(out).__name__})") from exc
    return out


def set_output(out: Any, selector: Any, value: Any) -> Any:
    """A copy of ``out`` with the selected part replaced by ``value``."""
    path = _path(selector)
    if not path:
        return value
    key, rest = path[0], path[1:]
    inner = set_output(out[key], rest if rest else None, value)
    if isinstance(out, tuple):
        return tuple(inner if i == key else v for i, v in enumerate(out))
    if isinstance(out, list):
        return [inner if i == key else v for i, v in enumerate(out)]
    new = dict(out)
    new[key] = inner
    return type(out)(new) if not isinstance(out, dict) else new
