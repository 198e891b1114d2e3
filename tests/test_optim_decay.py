"""Which leaves the base optimizer's weight decay touches (``weight_decay_mask``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from alearn.train import create_optimizer

TREE = {"params": {"conv": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 3.0)},
                   "bn": {"scale": jnp.full((2,), 4.0), "bias": jnp.full((2,), 5.0)}},
        "feedback": {"conv": {"B": jnp.full((2, 2), 6.0)}}}
DECAYED = {
    "params": {"params/conv/kernel", "params/conv/bias", "params/bn/scale", "params/bn/bias"},
    "kernels": {"params/conv/kernel"},
    "all": {"params/conv/kernel", "params/conv/bias", "params/bn/scale", "params/bn/bias",
            "feedback/conv/B"},
}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("mask", sorted(DECAYED))
def test_weight_decay_mask_selects_leaves(mask, optimizer):
    """Zero gradients: the update is -lr*wd*w exactly on the masked leaves, 0 elsewhere
    (sgd adds wd*w to the gradient; adamw subtracts lr*wd*w, decoupled)."""
    lr, wd = 0.5, 0.1
    opt = create_optimizer(optimizer, lr, weight_decay=wd, weight_decay_mask=mask)
    zeros = jax.tree.map(jnp.zeros_like, TREE)
    upd, _ = opt.update(zeros, opt.init(TREE), TREE)
    flat_u = traverse_util.flatten_dict(upd, sep="/")
    for k, w in traverse_util.flatten_dict(TREE, sep="/").items():
        want = -lr * wd * w if k in DECAYED[mask] else jnp.zeros_like(w)
        np.testing.assert_allclose(flat_u[k], want, rtol=1e-6, err_msg=k)


def test_unknown_weight_decay_mask_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown weight_decay_mask 'bias'; choose one of: "
                                         "params, kernels, conv_kernels, all"):
        create_optimizer("sgd", 0.1, weight_decay=1e-4, weight_decay_mask="bias")
