"""A checkpoint written before the models became plain Flax restores after (issue 25).

``tests/data/old_dfa_resnet`` was written by the old code (commit 80bcc5c, the native
ResNet with hand-placed receivers): ``python -m experiments.train`` with its
``config.json`` (ResNet-18 x0.0625, DFA, Adam, 8x8 synthetic images, one epoch). Its DFA
feedback sits at ``stem_receiver/D``, ``<block>/receiver1/D`` and ``<block>/receiver2/D``.
Restored into a state the current trainer creates, every matrix must land on the receiving
point it served, named as the ASAP authors' code places them (module docstring of
``alearn/models/_convert.py``), and everything else must restore unchanged.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import orbax.checkpoint as ocp
from flax import traverse_util

import alearn
from alearn.train.checkpoint import Checkpointer
from alearn.train.optim import optimizer_from_config
from alearn.train.state import create_train_state

HERE = os.path.join(os.path.dirname(__file__), "data", "old_dfa_resnet")


def _flat(tree):
    return traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(tree)), sep="/")


def test_old_dfa_resnet_checkpoint_restores_converted(tmp_path):
    with open(os.path.join(HERE, "config.json")) as f:
        config = json.load(f)
    shutil.copytree(os.path.join(HERE, "checkpoints"), tmp_path / "checkpoints")
    raw = ocp.CheckpointManager(str(tmp_path / "checkpoints")).restore(
        1, args=ocp.args.StandardRestore())
    old = _flat(raw["fixed"]["feedback"])
    assert "stem_receiver/D" in old and "stage3_block1/receiver2/D" in old

    model = alearn.models.create(config["model"], 10, **config["model_kwargs"])
    rule = alearn.rules.create(config["rule"], **config["rule_hparams"])
    x = jnp.zeros((2, *config["dataset_options"]["image_shape"]))
    optimizer = optimizer_from_config(ml_collections.ConfigDict(config), rule, 4)
    template = create_train_state(model, rule, optimizer, jax.random.key(9), x)
    ckpt = Checkpointer(str(tmp_path))
    epoch, state = ckpt.restore_latest(template)
    ckpt.close()
    assert epoch == 1
    new = _flat(state.fixed["feedback"])
    blocks = [f"stage{s}_block{b}" for s in range(4) for b in range(2)]
    want = {"stage0_block0/D": old["stem_receiver/D"]}
    for i, blk in enumerate(blocks):
        want[f"{blk}/conv2/D"] = old[f"{blk}/receiver1/D"]
        nxt = f"{blocks[i + 1]}/D" if i + 1 < len(blocks) else f"{blk}/D_out"
        want[nxt] = old[f"{blk}/receiver2/D"]
    assert set(new) == set(want) | {"classifier/D"}
    for k, v in want.items():
        np.testing.assert_array_equal(new[k], v, err_msg=k)
    # parameters, batch statistics, optimizer state and step: as saved
    for a, b in zip(jax.tree.leaves(state.trainable), jax.tree.leaves(raw["trainable"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(state.step, raw["step"])
    assert not np.array_equal(_flat(state.trainable["params"])["stem_conv/kernel"],
                              _flat(template.trainable["params"])["stem_conv/kernel"])
    assert not os.path.exists(tmp_path / "corrupted_checkpoints")
