"""Stratified selection: apportioning, held-out test splits and the max-samples limit."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fleettune.data.sampling import apportion, hold_out, limit, stratified_split
from fleettune.data.types import Split


def test_apportion_golden_numbers() -> None:
    assert apportion([1, 1, 1], 10, [10, 10, 10]).tolist() == [4, 3, 3]
    assert apportion([0.5, 0.3, 0.2], 7, [7, 7, 7]).tolist() == [4, 2, 1]
    # A capped entry's share flows to the others.
    assert apportion([8, 1, 1], 6, [2, 6, 6]).tolist() == [2, 2, 2]
    # Zero weights get rows only once the weighted entries are full.
    assert apportion([1, 0], 3, [1, 5]).tolist() == [1, 2]


@given(
    weights=st.lists(st.floats(0, 100), min_size=1, max_size=8),
    caps=st.lists(st.integers(0, 50), min_size=8, max_size=8),
    data=st.data(),
)
def test_apportion_sums_to_total_within_caps(weights: list[float], caps: list[int], data: st.DataObject) -> None:
    caps = caps[: len(weights)]
    total = data.draw(st.integers(0, sum(caps)))
    quota = apportion(weights, total, caps)
    assert quota.sum() == total
    assert (quota <= np.asarray(caps)).all() and (quota >= 0).all()


def test_stratified_split_holds_out_a_fifth_of_each_label() -> None:
    labels = [0] * 50 + [1] * 20 + [2] * 5
    train, test = stratified_split(labels, 0.2, seed=3)
    held = Counter(labels[i] for i in test)
    assert held == {0: 10, 1: 4, 2: 1}
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))


def test_stratified_split_keeps_both_sides_of_a_two_row_label_and_a_lone_row_in_train() -> None:
    labels = [0] * 10 + [1, 1] + [2]
    train, test = stratified_split(labels, 0.2, seed=0)
    assert {labels[i] for i in test} == {0, 1}
    assert {labels[i] for i in train} == {0, 1, 2}


def test_stratified_split_is_fixed_by_the_seed() -> None:
    labels = [i % 3 for i in range(60)]
    first, second = stratified_split(labels, 0.2, 7), stratified_split(labels, 0.2, 7)
    assert np.array_equal(first[1], second[1])
    assert not np.array_equal(first[1], stratified_split(labels, 0.2, 8)[1])


def test_hold_out_stratifies_by_group_and_label_when_rows_have_groups() -> None:
    groups = ["a"] * 40 + ["b"] * 10
    split = Split([str(i) for i in range(50)], [i % 2 for i in range(50)], groups)
    _, test = hold_out(split, seed=1)
    assert test.groups is not None
    assert Counter(zip(test.groups, test.labels, strict=True)) == {
        ("a", 0): 4,
        ("a", 1): 4,
        ("b", 0): 1,
        ("b", 1): 1,
    }


def test_limit_keeps_every_label_even_a_rare_one() -> None:
    split = Split([str(i) for i in range(103)], [0] * 100 + [1, 2, 3])
    small = limit(split, 10, seed=0)
    assert len(small) == 10
    assert set(small.labels) == {0, 1, 2, 3}


def test_limit_below_the_number_of_labels_keeps_the_most_frequent_ones() -> None:
    split = Split([str(i) for i in range(12)], [0] * 6 + [1] * 4 + [2] * 2)
    assert sorted(limit(split, 2, seed=0).labels) == [0, 1]


def test_limit_is_deterministic_and_keeps_the_split_when_large_enough() -> None:
    split = Split([str(i) for i in range(40)], [i % 4 for i in range(40)], [str(i % 2) for i in range(40)])
    assert limit(split, 8, seed=5) == limit(split, 8, seed=5)
    assert limit(split, 40, seed=5) is split
    assert limit(split, None, seed=5) is split


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.integers(0, 5), min_size=1, max_size=120), data=st.data())
def test_limit_takes_exactly_n_distinct_rows_proportionally(labels: list[int], data: st.DataObject) -> None:
    n = data.draw(st.integers(1, len(labels)))
    split = Split([str(i) for i in range(len(labels))], labels)
    small = limit(split, n, seed=0)
    assert len(small) == n
    assert len(set(small.texts)) == n
    full, kept = Counter(labels), Counter(small.labels)
    if n >= len(full):
        assert set(kept) == set(full)
    for label, count in kept.items():
        assert count <= full[label]
        # The one-row floor per label can shift each share by at most the number of labels.
        assert abs(count - n * full[label] / len(labels)) <= len(full) + 1
