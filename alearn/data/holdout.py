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


def check_fraction(fraction) -> float:
    """``fraction`` as a float, if it is a number in (0, 1); else ValueError naming it."""
    if (isinstance(fraction, bool) or not isinstance(fraction, (float, int, np.floating))
            or not 0 < fraction < 1):
        raise ValueError(f"validation must be a fraction in (0, 1) (e.g. 0.1), got {fraction!r}")
    return float(fraction)


def split(train, fraction: float) -> dict:
    """``{"train": Subset, "test": Subset}``: a class-stratified held-out ``fraction``.

    Class ``c`` with ``n_c`` examples gives ``round(fraction * n_c)`` of them to the held-out
    part, at least 1 and, when ``n_c >= 2``, at most ``n_c - 1`` (each class stays in both).
    """
    fraction = check_fraction(fraction)
    labels = _labels(train)
    rng = np.random.default_rng(SPLIT_SEED)
    held = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(1, int(round(fraction * len(rows)))), max(1, len(rows) - 1))
        held.append(rows[:k])
    mask = np.zeros(len(labels), bool)
    mask[np.concatenate(held)] = True
    return {"train": Subset(train, np.flatnonzero(~mask)), "test": Subset(train, np.flatnonzero(mask))}
