"""Metafeature distances and t-SNE (AL thesis Sec. 3.3) on AL sequence models' block outputs.

The ``al_compare`` kind of ``experiments.reproduce`` feeds ``al.prediction_path``'s
activations to ``alearn.analysis``; its training and restoring is tested on the MLP
(tests/test_reproduce*.py, tests/test_al*.py). Here: the sequence blocks' outputs (which carry
the padding mask as an extra channel) reach the analysis without that channel.
"""

import jax
import numpy as np

import alearn.al as al
from alearn.analysis import metafeatures as mf
from alearn.analysis import tsne

from _al_seq_fixtures import CLASSES, _net, _states


def _distances(x, labels):
    """(inter, intra) by hand: pairwise loops over classes and centroids."""
    x = np.asarray(x, np.float64).reshape(len(labels), -1)
    intra = []
    for k in np.unique(labels):
        xs = x[labels == k]
        d = [np.linalg.norm(a - b) for i, a in enumerate(xs) for b in xs[i + 1:]]
        if d:
            intra.append(np.mean(d))
    cents = [x[labels == k].mean(0) for k in np.unique(labels)]
    inter = [np.linalg.norm(a - b) for i, a in enumerate(cents) for b in cents[i + 1:]]
    return float(np.mean(inter)), float(np.mean(intra))


def test_block_outputs_reach_the_analysis_without_the_mask_channel(tmp_path, monkeypatch):
    """Transformer on image rows: prediction-path layer 2 (block 1's encoder output) has the
    distances a hand computation of block 1's f (minus its mask channel) gives, and a t-SNE
    panel of it is drawn."""
    rng = np.random.default_rng(0)
    x = rng.random((24, 7, 4, 1)).astype(np.float32)  # 7 rows of 4 pixels
    labels = np.repeat(np.arange(CLASSES), 8)
    net = _net("al_transformer", shape=(7, 4, 1))
    states = net.init(jax.random.key(2))
    _, acts = al.prediction_path(net, states, x)
    bd, st = net.blocks[0], states[0]
    s1, _ = al.apply_fn(bd.f, st.params["f"], st.model_state["f"], x, False)
    assert s1.shape == (24, 7, 8 + 1)  # 7 rows, width 8 + the mask channel
    name, layer2 = acts[1]
    assert np.asarray(layer2).shape == (24, 7, 8), name
    inter, intra = _distances(jax.device_get(s1)[..., :-1], labels)
    q = mf.metafeature_quality(layer2, labels)
    np.testing.assert_allclose([q["inter"], q["intra"]], [inter, intra], rtol=1e-4)

    fitted = []
    monkeypatch.setattr(tsne, "embed", lambda f, seed=0, perplexity=30.0: fitted.append(
        np.asarray(f).reshape(len(f), -1).shape) or rng.random((len(f), 2)))
    tsne.plot_tsne([("AL", [("layer 2", layer2)])], labels, str(tmp_path / "t.png"))
    assert fitted == [(24, 56)] and (tmp_path / "t.png").stat().st_size > 1000


def test_lstm_token_block_outputs_drop_the_mask_channel():
    net, states = _net("al_lstm"), _states("al_lstm")
    ids = np.array([[3, 4, 0, 0, 0], [5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [2, 0, 0, 0, 0]])
    _, acts = al.prediction_path(net, states, ids)
    bd, st = net.blocks[0], states[0]
    s1, _ = al.apply_fn(bd.f, st.params["f"], st.model_state["f"], ids, False)
    np.testing.assert_array_equal(np.asarray(acts[1][1]), np.asarray(s1)[..., :-1])
