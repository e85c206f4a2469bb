"""Deterministic stratified row selection: held-out test splits and size limits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fleettune.data.types import Split, subset
from fleettune.errors import DataError

# Share of rows held out for testing when a data set ships no test split.
TEST_FRACTION = 0.2


def apportion(weights: Sequence[float] | np.ndarray, total: int, caps: Sequence[int] | np.ndarray) -> np.ndarray:
    """Whole shares of ``total`` in proportion to ``weights``, none above its cap (largest remainder).

    Ties go to the lower index, so the result is a pure function of its arguments.
    """
    weight = np.asarray(weights, dtype=float)
    cap = np.asarray(caps, dtype=np.int64)
    if total > int(cap.sum()):
        raise ValueError(f"cannot apportion {total} within caps summing to {int(cap.sum())}")
    quota = np.zeros(len(weight), dtype=np.int64)
    remaining = total
    while remaining > 0:
        open_ = quota < cap
        live = np.where(open_, weight, 0.0)
        if live.sum() <= 0:
            # Only zero-weight entries have room left: fill them evenly.
            live = open_.astype(float)
        share = remaining * live / live.sum()
        grant = np.minimum(np.floor(share).astype(np.int64), cap - quota)
        if grant.sum() == 0:
            # Every open share is below one: the largest fractions get one unit each.
            order = np.lexsort((np.arange(len(share)), -share))
            grant[order[:remaining]] = 1
        quota += grant
        remaining -= int(grant.sum())
    return quota


def stratified_split(labels: Sequence[int], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row indices holding out ``test_fraction`` of every label.

    A label with two or more rows keeps at least one row on each side; a single row stays in train.
    """
    rng = np.random.default_rng(seed)
    label_array = np.asarray(labels)
    test_rows: list[np.ndarray] = []
    for label in np.unique(label_array):
        rows = rng.permutation(np.flatnonzero(label_array == label))
        count = int(np.floor(test_fraction * len(rows) + 0.5))
        count = min(max(count, 1), len(rows) - 1) if len(rows) >= 2 else 0
        test_rows.append(rows[:count])
    test = np.sort(np.concatenate(test_rows)) if test_rows else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(label_array)), test)
    return train, test


def hold_out(split: Split, seed: int, test_fraction: float = TEST_FRACTION) -> tuple[Split, Split]:
    """(train, test) splits of a data set that ships no test split.

    Strata are labels, or (group, label) pairs when rows have groups, so that a natural partition
    finds every group in the test split in its share.
    """
    strata = np.asarray(split.labels, dtype=np.int64)
    if split.groups is not None:
        _, group_ids = np.unique(np.asarray(split.groups), return_inverse=True)
        strata = group_ids.astype(np.int64) * (int(strata.max(initial=0)) + 1) + strata
    train, test = stratified_split(strata.tolist(), test_fraction, seed)
    return subset(split, train), subset(split, test)


def stratified_indices(labels: Sequence[int], n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` rows drawn per label in proportion to its frequency.

    Every label keeps at least one row while ``n`` allows; below that, the most frequent labels win.
    """
    label_array = np.asarray(labels)
    if n >= len(label_array):
        return np.arange(len(label_array))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(label_array, return_counts=True)
    floor = np.zeros(len(classes), dtype=np.int64)
    if n >= len(classes):
        floor[:] = 1
    else:
        floor[np.lexsort((classes, -counts))[:n]] = 1
    quota = floor + apportion(counts, n - int(floor.sum()), counts - floor)
    chosen = [
        rng.permutation(np.flatnonzero(label_array == label))[:take] for label, take in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def limit(split: Split, n: int | None, seed: int) -> Split:
    """A deterministic stratified subset of ``n`` rows (the split itself when ``n`` is None or large)."""
    if n is None or n >= len(split):
        return split
    if n < 1:
        raise DataError(f"cannot limit a split to {n} rows; expected at least 1")
    return subset(split, stratified_indices(split.labels, n, seed))
