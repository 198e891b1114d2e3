"""What the base optimizer's weight decay touches: the masks of ``weight_decay_mask``.

Shared by :func:`alearn.train.create_optimizer` and the fused KP optimizer
(:mod:`alearn.train.kp_sgd`); both import it from here.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

#: What the base optimizer's weight decay touches (``create_optimizer(weight_decay_mask=)``):
#: "params": every forward parameter -- kernels, biases, BatchNorm scale/shift (default);
#: "kernels": conv/dense kernels only; "conv_kernels": conv (rank-4) kernels only (the AL
#: authors' BP VGG); "all": params and trained feedback weights (KP's and ASAP's B), as the
#: ASAP authors' torch SGD ``weight_decay`` over every parameter with a gradient. Fixed
#: feedback weights are never in the optimizer's tree.
WEIGHT_DECAY_MASKS = ("params", "kernels", "conv_kernels", "all")


def _params_only(tree: Any) -> Any:
    """Weight-decay mask: True on the ``"params"`` subtree, False elsewhere (feedback)."""
    if isinstance(tree, dict) and "params" in tree:
        return {k: jax.tree.map(lambda _, on=(k == "params"): on, v) for k, v in tree.items()}
    return jax.tree.map(lambda _: True, tree)


def _kernel_mask(conv_only: bool) -> Callable[[Any], Any]:
    """Mask: True on ``"params"`` leaves named ``kernel`` (rank 4 only if ``conv_only``)."""
    def mask(tree: Any) -> Any:
        outer = _params_only(tree)

        def on(path, leaf, keep):
            named = jax.tree_util.keystr(path).endswith("['kernel']")
            return bool(keep) and named and (not conv_only or leaf.ndim == 4)
        return jax.tree_util.tree_map_with_path(on, tree, outer)
    return mask


def decay_mask(which: str = "params") -> Callable[[Any], Any]:
    """The weight-decay mask named ``which`` (one of ``WEIGHT_DECAY_MASKS``)."""
    key = str(which).lower()
    masks = {"params": _params_only, "kernels": _kernel_mask(False),
             "conv_kernels": _kernel_mask(True),
             "all": lambda tree: jax.tree.map(lambda _: True, tree)}
    if key not in masks:
        raise ValueError(f"unknown weight_decay_mask {which!r}; choose one of: "
                         f"{', '.join(WEIGHT_DECAY_MASKS)}")
    return masks[key]
