"""Per-client test shares: disjoint, covering, proportional to each client's training mix."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fleettune.data import client_test_shares, partition


def test_golden_shares_follow_training_label_counts() -> None:
    train_labels = [0] * 6 + [1] * 4
    parts = [np.array([0, 1, 2, 3, 4, 5, 6]), np.array([7, 8, 9])]  # client 0: six 0s and one 1
    test_labels = [0] * 6 + [1] * 4
    shares = client_test_shares(train_labels, parts, test_labels, seed=0)
    assert [Counter(test_labels[i] for i in share) for share in shares] == [{0: 6, 1: 1}, {1: 3}]


def test_natural_shares_follow_groups() -> None:
    train_groups = ["a"] * 4 + ["b"] * 4
    parts = [np.arange(4), np.arange(4, 8)]
    test_groups = ["b", "a", "b", "a", "a"]
    shares = client_test_shares(
        [0] * 8, parts, [0] * 5, seed=0, test_groups=test_groups, natural=True, train_groups=train_groups
    )
    assert [share.tolist() for share in shares] == [[1, 3, 4], [0, 2]]


def test_a_label_no_client_trained_on_is_dealt_evenly() -> None:
    shares = client_test_shares([0, 0], [np.array([0]), np.array([1])], [1, 1, 1, 1], seed=0)
    assert [len(share) for share in shares] == [2, 2]


def test_every_client_gets_a_row_while_there_are_enough() -> None:
    train_labels = [0] * 99 + [1]
    parts = [np.arange(99), np.array([99])]
    # Client 1 trained on one row of label 1 but the test split has none: it borrows a row.
    shares = client_test_shares(train_labels, parts, [0, 0, 0], seed=0)
    assert [len(share) for share in shares] == [2, 1]


@settings(max_examples=50, deadline=None)
@given(
    train_labels=st.lists(st.integers(0, 4), min_size=2, max_size=200),
    test_labels=st.lists(st.integers(0, 5), min_size=1, max_size=100),
    data=st.data(),
)
def test_shares_are_disjoint_covering_and_fixed_by_seed(
    train_labels: list[int], test_labels: list[int], data: st.DataObject
) -> None:
    num_clients = data.draw(st.integers(1, min(8, len(train_labels))))
    spec = data.draw(st.sampled_from(["iid", "dirichlet:0.3", "quantity:0.5"]))
    parts = partition(spec, train_labels, None, num_clients, seed=2)
    shares = client_test_shares(train_labels, parts, test_labels, seed=3)
    assert sorted(np.concatenate(shares).tolist()) == list(range(len(test_labels)))
    if len(test_labels) >= num_clients:
        assert all(len(share) > 0 for share in shares)
    again = client_test_shares(train_labels, parts, test_labels, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(shares, again, strict=True))
