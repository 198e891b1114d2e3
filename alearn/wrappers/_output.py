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


def split_batch(batch: tuple, targets: Any, where: str) -> tuple[tuple, tuple]:
    """``(model inputs, loss arguments)`` of ``value_and_updates``' positional batch:
    without ``targets`` the first array is the input and the rest go to the loss; with
    it, every positional array is an input and ``targets`` (a tuple: several) the loss's."""
    if not batch:
        raise ValueError(f"{where} needs the batch: (x, *loss_args) or (*inputs, targets=...)")
    if targets is None:
        return batch[:1], batch[1:]
    return batch, tuple(targets) if isinstance(targets, tuple) else (targets,)
