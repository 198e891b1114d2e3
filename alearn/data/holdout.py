"""A held-out validation split, and fixed subsets, carved from a training split.

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


def _stratified(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A mask picking, in class ``c`` of ``n_c`` examples, ``round(fraction * n_c)`` of them:
    at least 1 and, when ``n_c >= 2``, at most ``n_c - 1`` (each class stays on both sides)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(1, int(round(fraction * len(rows)))), max(1, len(rows) - 1))
        mask[rows[:k]] = True
    return mask


def split(train, fraction: float) -> dict:
    """``{"train": Subset, "test": Subset}``: a class-stratified held-out ``fraction``."""
    mask = _stratified(_labels(train), check_fraction(fraction), SPLIT_SEED)
    return {"train": Subset(train, np.flatnonzero(~mask)), "test": Subset(train, np.flatnonzero(mask))}


def subset(train, examples: int) -> Subset:
    """A fixed class-stratified subset of about ``examples`` training examples.

    Drawn with a seed other than :func:`split`'s, so a subset taken after a validation split
    is a fresh draw from what remains.
    """
    n = len(train)
    if isinstance(examples, bool) or not isinstance(examples, (int, np.integer)) \
            or not 0 < examples <= n:
        raise ValueError(f"train_examples must be an integer in [1, {n}], got {examples!r}")
    if examples == n:
        return Subset(train, np.arange(n))
    mask = _stratified(_labels(train), examples / n, SPLIT_SEED + 1)
    return Subset(train, np.flatnonzero(mask))
