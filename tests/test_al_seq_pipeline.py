"""The AL LSTM / Transformer through the device pipeline (2 stages on forced CPU devices)
equal the sequential whole-network AL step, on padded token batches."""

import jax
import numpy as np
import pytest

import alearn.al as al
from _al_pipeline import pipelined_and_sequential

KW = {"al_lstm": dict(width=8, y_width=6, depth=2, vocab_size=11),
      "al_transformer": dict(width=8, y_width=6, depth=2, heads=2, max_len=6, vocab_size=11)}


@pytest.mark.parametrize("name", ["al_lstm", "al_transformer"])
def test_seq_pipeline_two_stages_equals_sequential(name, mode="auto"):
    """The trainer's PipelinedStep (auto mode = MPMD on one process; both engines equal
    sequential AL on the MLP blocks in tests/test_pipeline.py)."""
    net = al.create(name, 3, (6,), spec_overrides=KW[name], lr=1e-2)
    states = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    xs = rng.integers(1, 11, (4, 4, 6)).astype(np.int32)
    xs[:, :, 4:] *= rng.integers(0, 2, (4, 4, 1))  # some rows end in padding (0)
    labels = rng.integers(0, 3, (4, 4))
    cfg = {"pipeline_stages": 2, "batch_size": 4, "pipeline_mode": mode}
    step, got, _, want, _ = pipelined_and_sequential(net, states, cfg, xs, labels)
    assert step.pipeline.groups == ((0,), (1,)) and step.pipeline.mode == "mpmd"
    moved = 0.0
    for g, w, w0 in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(states)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
        moved = max(moved, float(np.abs(np.asarray(w) - np.asarray(w0)).max()))
    assert moved > 1e-2  # 4 steps at lr 1e-2 moved the parameters far past the tolerance
