"""t-SNE plots of raw data and hidden layers, coloured by label (AL thesis Figs. 3.6–3.9)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from absl import logging


def embed(features: Any, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE embedding (sklearn.manifold.TSNE, PCA init) of flattened ``features``."""
    from sklearn.manifold import TSNE  # heavy import, only when plotting

    x = np.asarray(features, np.float32).reshape(len(features), -1)
    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed
                ).fit_transform(x)


def _shrink_png(path: str, colors: int = 32) -> None:
    """Re-saves the PNG with a small palette (a few tens of kB, fit for committing)."""
    from PIL import Image  # pillow ships with matplotlib

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=colors)
    small.save(path, optimize=True)


def plot_tsne(rows: Sequence[tuple[str, Sequence[tuple[str, Any]]]], labels: Any, path: str,
              seed: int = 0, title: str = "") -> str:
    """Grid of t-SNE panels written as a PNG.

    Args:
      rows: ``[(row_name, [(panel_name, features), ...]), ...]``, e.g. one row for BP and one
        for AL with panels raw data / layer 2 / layer 4 / output (thesis Fig. 3.6).
      labels: (N,) integer labels, the colours.
      path: output PNG path.
      seed: t-SNE random state.
      title: figure title.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    ncols = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(3 * ncols, 3 * len(rows)),
                             squeeze=False)
    for r, (row_name, panels) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(panels):
                ax.axis("off")
                continue
            name, feats = panels[c]
            xy = embed(feats, seed)
            ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=3, vmin=0, vmax=9)
            ax.set_title(f"{row_name}: {name}", fontsize=11)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    _shrink_png(path)
    logging.info("wrote %s", path)
    return path
