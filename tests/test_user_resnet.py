"""A researcher's own ResNet, written in plain Flax with its own names and code order, trains
by ASAP with the authors' grouping and by pure DFA with the same updates as alearn's ResNet
at equal weights (issue 25: one path for every model).

The user's net differs from ``alearn.models.ResNet`` in everything but the arithmetic:
module and parameter names (``layer1_0/c1``, ``proj_conv``, ``head``), the order of the
calls inside a block (the projection shortcut runs *before* conv1), and how stages are
written. The paper's needs are declared by patterns: ``blocks=("layer*",)`` (activation-
sharing groups; DFA receivers at the block inputs) and ``receivers=`` the last block.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import alearn

CLASSES, WIDTHS, STAGES = 5, (4, 8), (2, 2)


class Unit(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                       epsilon=1e-5, name=name)
        skip = x
        if self.stride != 1 or x.shape[-1] != self.features:  # projection first
            skip = nn.Conv(self.features, (1, 1), (self.stride, self.stride), padding="VALID",
                           use_bias=False, name="proj_conv")(x)
            skip = bn("proj_bn")(skip)
        y = nn.Conv(self.features, (3, 3), (self.stride, self.stride), padding=((1, 1), (1, 1)),
                    use_bias=False, name="c1")(x)
        y = nn.relu(bn("n1")(y))
        y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    name="c2")(y)
        return nn.relu(bn("n2")(y) + skip)


class UserResNet(nn.Module):
    @nn.compact
    def __call__(self, images, train: bool = False):
        h = nn.Conv(WIDTHS[0], (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    name="conv_init")(images)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 name="bn_init")(h))
        for i, (n, w) in enumerate(zip(STAGES, WIDTHS)):
            for j in range(n):
                h = Unit(w, 2 if (i and not j) else 1, name=f"layer{i + 1}_{j}")(h, train)
        return nn.Dense(CLASSES, name="head")(jnp.mean(h, axis=(1, 2)))


LAST = f"layer{len(STAGES)}_{STAGES[-1] - 1}"
_NAMES = [(r"^stem_conv", "conv_init"), (r"^stem_bn", "bn_init"), (r"^classifier", "head"),
          (r"/conv1(/|$)", r"/c1\1"), (r"/conv2(/|$)", r"/c2\1"), (r"/bn1(/|$)", r"/n1\1"),
          (r"/bn2(/|$)", r"/n2\1"), (r"/shortcut_conv(/|$)", r"/proj_conv\1"),
          (r"/shortcut_bn(/|$)", r"/proj_bn\1")]


def _user_path(path: str) -> str:
    m = re.match(r"^stage(\d+)_block(\d+)(.*)$", path)
    if m:
        path = f"layer{int(m[1]) + 1}_{m[2]}{m[3]}"
    for pat, rep in _NAMES:
        path = re.sub(pat, rep, path)
    return path


def _rename(tree):
    flat = traverse_util.flatten_dict(dict(tree), sep="/")
    return traverse_util.unflatten_dict({_user_path(k): v for k, v in flat.items()}, sep="/")


def _updates(model, rule, variables, x, y):
    return jax.jit(alearn.rule_updates, static_argnums=(0, 1))(model, rule, variables, x, y)


@pytest.mark.parametrize("rule_name,hparams", [
    ("asap", {"k": 2}), ("asap", {"k": 4}), ("asfp", {}), ("dfa", {}),
])
def test_user_resnet_equals_alearn_resnet(rule_name, hparams):
    rule = alearn.rules.create(rule_name, **hparams)
    ours = alearn.models.create("resnet18", CLASSES, stage_sizes=STAGES, widths=WIDTHS)
    user = alearn.wrap(UserResNet(), blocks=("layer*",), receivers=(LAST,))
    kx, ky = jax.random.split(jax.random.key(5))
    x = jax.random.normal(kx, (4, 8, 8, 3))
    y = jax.random.randint(ky, (4,), 0, CLASSES)
    v = alearn.init(ours, rule, jax.random.key(6), x)
    v_user = {c: _rename(t) for c, t in v.items()}
    # the user's wrap creates exactly the renamed tree (same feedback at the same layers)
    fresh = jax.eval_shape(lambda: user.init(jax.random.key(0), x, rule=rule))
    assert jax.tree.structure(fresh) == jax.tree.structure(v_user)
    want = {c: _rename(t) for c, t in _updates(ours, rule, v, x, y).items()}
    got = _updates(user, rule, v_user, x, y)
    flat_w = traverse_util.flatten_dict(want, sep="/")
    flat_g = traverse_util.flatten_dict(got, sep="/")
    assert set(flat_g) == set(flat_w)
    scale = max(float(np.max(np.abs(a))) for a in flat_w.values())
    for k in flat_w:
        np.testing.assert_allclose(flat_g[k], flat_w[k], atol=1e-6 * scale, err_msg=k)
    # and the rule is not BP: the conv updates differ from the exact gradient
    bp = _updates(ours, alearn.rules.BP(), {c: t for c, t in v.items() if c != "feedback"}, x, y)
    conv = "stage1_block1/conv1/kernel"
    assert not np.allclose(traverse_util.flatten_dict(bp["params"], sep="/")[conv],
                           traverse_util.flatten_dict(want["params"], sep="/")[_user_path(conv)],
                           atol=1e-4 * scale)
