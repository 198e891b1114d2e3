"""Metafeature quality: intra-/inter-class distances (AL thesis Sec. 3.3, Table 3.4).

For features ``X`` (one row per example, flattened) with labels ``c``:

- intra-class distance: ``d_k^intra`` = mean Euclidean distance over all unordered pairs of
  distinct examples of class k; the intra-class distance is the mean of ``d_k^intra`` over
  classes (classes with fewer than 2 examples are skipped);
- inter-class distance: mean Euclidean distance over all unordered pairs of distinct class
  centroids;
- ratio = inter / intra (higher = better separated metafeatures).

Features come from any trained model: AL networks via ``alearn.al.prediction_path``, any
Flax model via its ``sow``-n ``"intermediates"`` (``alearn.al.Stack`` sows ``layer<k>``) or
``capture_intermediates=True`` (every submodule's output), see :func:`model_features`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

Array = jax.Array


def _pairwise_mean(x: np.ndarray, chunk: int = 1024) -> float:
    """Mean Euclidean distance over unordered pairs of distinct rows of ``x``."""
    n = x.shape[0]
    if n < 2:
        return float("nan")
    x = np.asarray(x, np.float64)
    sq = np.sum(x * x, axis=1)
    total = 0.0
    for i in range(0, n, chunk):
        xi = x[i:i + chunk]
        d = np.sqrt(np.maximum(sq[i:i + chunk, None] + sq[None, :] - 2.0 * xi @ x.T, 0.0))
        # zero the diagonal exactly (rounding can leave sqrt(eps) there)
        d[np.arange(xi.shape[0]), np.arange(i, i + xi.shape[0])] = 0.0
        total += float(np.sum(d))
    return total / (n * (n - 1))


def intra_class_distance(features: Any, labels: Any) -> float:
    """Mean over classes of the mean pairwise distance inside the class (Sec. 3.3)."""
    x = np.asarray(features, np.float32).reshape(len(labels), -1)
    labels = np.asarray(labels)
    per_class = [_pairwise_mean(x[labels == k]) for k in np.unique(labels)
                 if np.sum(labels == k) >= 2]
    if not per_class:
        raise ValueError("intra-class distance needs a class with at least 2 examples; "
                         f"got class sizes {np.bincount(labels).tolist()}")
    return float(np.mean(per_class))


def class_centroids(features: Any, labels: Any) -> np.ndarray:
    """(num present classes, D) centroids, classes in ascending label order."""
    x = np.asarray(features, np.float32).reshape(len(labels), -1)
    labels = np.asarray(labels)
    return np.stack([x[labels == k].mean(0) for k in np.unique(labels)])


def inter_class_distance(features: Any, labels: Any) -> float:
    """Mean distance between class centroids (Sec. 3.3)."""
    centroids = class_centroids(features, labels)
    if len(centroids) < 2:
        raise ValueError(f"inter-class distance needs >= 2 classes; got {len(centroids)}")
    return _pairwise_mean(centroids)


def metafeature_quality(features: Any, labels: Any) -> dict[str, float]:
    """{"inter", "intra", "ratio"} of one layer's features (Table 3.4)."""
    inter = inter_class_distance(features, labels)
    intra = intra_class_distance(features, labels)
    return {"inter": inter, "intra": intra, "ratio": inter / intra if intra > 0 else float("inf")}


def model_features(apply_fn: Callable[..., Any], variables: dict, x: Array,
                   capture: bool = False, **apply_kwargs) -> dict[str, np.ndarray]:
    """Intermediate features of a Flax model on ``x``: ``{"path/name": (B, ...) array}``.

    Reads the ``"intermediates"`` collection the model ``sow``-s; with ``capture`` every
    submodule's output (``capture_intermediates=True``). ``apply_fn`` is ``model.apply``;
    ``apply_kwargs`` go to it (e.g. ``rule=BP(), train=False``).
    """
    _, state = apply_fn(variables, x, mutable=["intermediates"],
                        capture_intermediates=capture, **apply_kwargs)
    flat = jax.tree_util.tree_flatten_with_path(dict(state.get("intermediates", {})))[0]
    out = {}
    for path, leaf in flat:
        keys = [getattr(k, "key", getattr(k, "idx", k)) for k in path]
        # sow stores a tuple of values; drop its index
        name = "/".join(str(k) for k in keys if not isinstance(k, int))
        out[name] = np.asarray(leaf)
    return out


def layer_table(features: dict[str, Any], labels: Any) -> dict[str, dict[str, float]]:
    """:func:`metafeature_quality` for every entry of ``features``."""
    return {name: metafeature_quality(f, labels) for name, f in features.items()}
