"""A held-out validation split carved from a training split (for choosing hyperparameters).

``split(train_source, fraction)`` -> ``{"train": rest, "test": held_out}``. The held-out
examples are, within each class, a fixed ``fraction`` chosen by a permutation with a fixed
seed (independent of the run's seed), so every run of a sweep sees the same split, and the
real test set is never read.
"""

from __future__ import annotations

import numpy as np

SPLIT_SEED = 20261130


class Subset:
    """The examples ``indices`` of ``source`` (any object with ``__len__`` and ``gather``)."""

    def __init__(self, source, indices: np.ndarray):
        self.source = source
        self.indices = np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def gather(self, indices: np.ndarray):
        return self.source.gather(self.indices[np.asarray(indices, np.int64)])


def _labels(source) -> np.ndarray:
    labels = getattr(source, "labels", None)
    if labels is None:  # a lazy source: read the labels once, in chunks
        n = len(source)
        labels = np.concatenate([source.gather(np.arange(s, min(n, s + 4096)))[1]
                                 for s in range(0, n, 4096)])
    return np.asarray(labels)


def split(train, fraction: float) -> dict:
    """``{"train": Subset, "test": Subset}``: a class-stratified held-out ``fraction``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (float, int)) or not 0 < fraction < 1:
        raise ValueError(f"validation must be a fraction in (0, 1), got {fraction!r}")
    labels = _labels(train)
    rng = np.random.default_rng(SPLIT_SEED)
    held = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        held.append(rows[: max(1, int(round(fraction * len(rows))))])
    mask = np.zeros(len(labels), bool)
    mask[np.concatenate(held)] = True
    return {"train": Subset(train, np.flatnonzero(~mask)), "test": Subset(train, np.flatnonzero(mask))}
