"""reproduce's ``al_compare`` kind (metafeature distances, t-SNE) on AL sequence models."""

import json
import os

import jax
import numpy as np

from experiments import _reproduce_kinds as kinds
from experiments.configs import al_seq
from experiments.tables import Run


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


def test_al_compare_on_transformer_block_outputs(tmp_path, monkeypatch):
    """AL transformer and its BP twin on a tiny synthetic row-sequence set: the kind writes
    per-layer distances for both and a t-SNE panel; AL layer 2 (block 1's encoder output,
    without the mask channel) has the distances a hand computation gives."""
    import alearn.al as al
    import alearn.al.train as al_train
    from alearn.analysis import tsne
    from sklearn.manifold import TSNE

    fitted = []

    def short_embed(features, seed=0, perplexity=30.0):  # sklearn's fewest iterations
        x = np.asarray(features, np.float32).reshape(len(features), -1)
        fitted.append(x.shape)
        return TSNE(2, perplexity=10.0, init="pca", random_state=seed,
                    max_iter=250).fit_transform(x)

    monkeypatch.setattr(tsne, "embed", short_embed)
    restored = []  # the kind's own restored AL network and states
    real_restore = al_train.restore
    monkeypatch.setattr(al_train, "restore",
                        lambda *a, **k: restored.append(real_restore(*a, **k)) or restored[-1])

    c = al_seq.get_config("transformer,fashion_mnist,cpu")
    c.dataset = "synthetic"
    c.dataset_options = {"num_train": 128, "num_test": 64, "num_classes": 3}
    c.model_kwargs.update(width=8, y_width=6, depth=2, heads=2, max_len=8)
    c.epochs, c.batch_size, c.eval_train = 1, 32, False
    run = Run("tf", "synthetic / Transformer", "AL vs BP", kind="al_compare", config=c,
              options={"num_examples": 64, "tsne_layers": ["2"]})
    kinds.al_compare(run, str(tmp_path))
    out = json.loads((tmp_path / "results.json").read_text())
    mf = out["metafeatures"]
    # embed, 2 encoders, bridge Dense, 2 decoders = 6 prediction-path layers in both nets
    assert out["last_layer"] == 6 and os.path.getsize(tmp_path / "tsne.png") > 1000
    # BP and AL rows: raw (8x8x1), layer 2 (8 rows x 8 features, no mask channel)
    assert fitted == [(64, 64), (64, 64)] * 2
    assert {f"{m} layer{k}" for m in ("AL", "BP") for k in range(1, 7)} <= set(mf)
    net, states, ds = restored[0]
    batch = next(ds.batches("test", 64, shuffle=False, augment=False))
    bd, st = net.blocks[0], states[0]
    s1, _ = al.apply_fn(bd.f, st.params["f"], st.model_state["f"], batch["image"], False)
    assert s1.shape == (64, 8, 9)  # 8 rows, 8 features + the mask channel
    inter, intra = _distances(jax.device_get(s1)[..., :-1], batch["label"])
    np.testing.assert_allclose(mf["AL layer2"]["inter"], inter, rtol=1e-4)
    np.testing.assert_allclose(mf["AL layer2"]["intra"], intra, rtol=1e-4)
    assert out["test_accuracy"]["bp"] is not None and out["num_params"]["al"] == \
        out["num_params"]["bp"]
