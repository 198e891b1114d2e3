"""Which parameter a layer's feedback ``B`` serves (KP's pairs, alignment angles).

A routed layer's forward weight is its ``kernel``, or the ``embedding`` table for a tied
head (``nn.Embed.attend``); B has that parameter's shape and sits at the same module path.
"""

from __future__ import annotations

from typing import Mapping

KERNEL_NAMES = ("kernel", "embedding")


def kernel_path(flat_params: Mapping[tuple, object], b_path: tuple) -> tuple | None:
    """The flattened path of the weight ``b_path`` (``.../B``) serves, or None."""
    for name in KERNEL_NAMES:
        path = b_path[:-1] + (name,)
        if path in flat_params:
            return path
    return None
