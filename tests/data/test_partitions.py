"""Client partitions: spec parsing, and the properties every partitioner keeps (hypothesis)."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleettune.data import PARTITIONERS, partition
from fleettune.data.partitions.label_skew import LabelSkew
from fleettune.errors import ConfigError, DataError

SPECS = ["iid", "dirichlet:0.1", "dirichlet:1", "dirichlet:100", "quantity:0.3", "quantity:5"]


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[int], int, int]:
    """Labels (1-300 rows, up to 6 classes), a client count no larger than the rows, and a seed."""
    labels = draw(st.lists(st.integers(0, 5), min_size=1, max_size=300))
    num_clients = draw(st.integers(1, min(10, len(labels))))
    return labels, num_clients, draw(st.integers(0, 2**32 - 1))


def test_registered_partitions() -> None:
    assert PARTITIONERS.names() == ["dirichlet", "iid", "natural", "quantity"]


@settings(max_examples=40, deadline=None)
@pytest.mark.parametrize("spec", SPECS)
@given(problem=problems())
def test_clients_are_disjoint_covering_nonempty_and_fixed_by_seed(
    spec: str, problem: tuple[list[int], int, int]
) -> None:
    labels, num_clients, seed = problem
    parts = partition(spec, labels, None, num_clients, seed)
    assert len(parts) == num_clients
    assert all(len(part) > 0 for part in parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    again = partition(spec, labels, None, num_clients, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def _skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label mix and the global one."""
    classes = np.unique(labels)
    overall = np.array([np.mean(labels == c) for c in classes])
    return float(
        np.mean([0.5 * np.abs(np.array([np.mean(labels[p] == c) for c in classes]) - overall).sum() for p in parts])
    )


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_dirichlet_small_alpha_is_more_label_skewed_than_large_alpha(seed: int) -> None:
    labels = np.repeat(np.arange(5), 200)
    skewed = _skew(labels, partition("dirichlet:0.1", labels, None, 5, seed))
    balanced = _skew(labels, partition("dirichlet:100", labels, None, 5, seed))
    assert skewed > balanced + 0.2


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_quantity_small_alpha_spreads_client_sizes_more_than_large_alpha(seed: int) -> None:
    labels = np.repeat(np.arange(4), 250)
    spread = [
        np.std([len(p) for p in partition(spec, labels, None, 5, seed)]) for spec in ("quantity:0.2", "quantity:100")
    ]
    assert spread[0] > spread[1]


def test_iid_clients_differ_in_size_by_at_most_one() -> None:
    sizes = [len(p) for p in partition("iid", list(range(103)), None, 10, 0)]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_matches_flower_dirichlet_partitioner() -> None:
    """Same seed, same clients as flwr-datasets' DirichletPartitioner (self_balancing and shuffle off)."""
    datasets = pytest.importorskip("datasets")
    flwr_partitioner = pytest.importorskip("flwr_datasets.partitioner")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    table = datasets.Dataset.from_dict({"label": labels, "row": np.arange(len(labels))})
    flower = flwr_partitioner.DirichletPartitioner(
        num_partitions=5, partition_by="label", alpha=0.5, min_partition_size=10, shuffle=False, seed=42
    )
    flower.dataset = table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = [np.sort(flower.load_partition(i).with_format("numpy")[:]["row"]) for i in range(5)]
    ours = LabelSkew(0.5).split(labels, None, 5, 42)
    assert all(np.array_equal(a, b) for a, b in zip(theirs, ours, strict=True))


def test_dirichlet_pinned_sizes_for_a_seed() -> None:
    labels = np.repeat(np.arange(3), 100)
    assert [len(p) for p in partition("dirichlet:0.5", labels, None, 4, 0)] == [101, 36, 93, 70]


# --- natural -----------------------------------------------------------------------------------

GROUPS = ["fridge"] * 30 + ["gps"] * 20 + ["door"] * 10


def _groups_of(parts: list[np.ndarray]) -> list[set[str]]:
    return [{GROUPS[i] for i in part} for part in parts]


def test_natural_gives_one_group_per_client_in_sorted_group_order() -> None:
    parts = partition("natural", [0] * len(GROUPS), GROUPS, 3, seed=0)
    assert _groups_of(parts) == [{"door"}, {"fridge"}, {"gps"}]
    assert [len(p) for p in parts] == [10, 30, 20]


def test_natural_with_more_clients_splits_big_groups_and_never_mixes() -> None:
    parts = partition("natural", [0] * len(GROUPS), GROUPS, 5, seed=0)
    assert all(len(groups) == 1 for groups in _groups_of(parts))
    assert Counter(next(iter(g)) for g in _groups_of(parts)) == {"fridge": 2, "gps": 2, "door": 1}
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(GROUPS)))


def test_natural_with_fewer_clients_keeps_groups_whole_and_balances_rows() -> None:
    parts = partition("natural", [0] * len(GROUPS), GROUPS, 2, seed=0)
    assert _groups_of(parts) == [{"fridge"}, {"gps", "door"}]


@settings(max_examples=40, deadline=None)
@given(
    groups=st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=200),
    data=st.data(),
)
def test_natural_never_splits_a_group_across_clients_with_others(groups: list[str], data: st.DataObject) -> None:
    num_clients = data.draw(st.integers(1, min(12, len(groups))))
    group_count = len(set(groups))
    parts = partition("natural", [0] * len(groups), groups, num_clients, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(groups)))
    per_client = [{groups[i] for i in part} for part in parts]
    if num_clients >= group_count:
        assert all(len(g) == 1 for g in per_client)
    else:
        # Whole groups: no group appears on two clients.
        assert sum(len(g) for g in per_client) == group_count


def test_natural_without_groups_is_a_data_error() -> None:
    with pytest.raises(DataError, match="partition 'natural' needs rows with natural groups"):
        partition("natural", [0, 1, 0], None, 2, 0)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["dirichlet", "dirichlet:", "dirichlet:-1", "dirichlet:abc", "quantity:nan"])
def test_bad_alpha_names_partition_and_the_expected_form(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"partition '.*' is invalid; expected (dirichlet|quantity):ALPHA"):
        partition(spec, [0, 1], None, 1, 0)


def test_unknown_partition_lists_the_forms() -> None:
    with pytest.raises(
        ConfigError,
        match=r"partition 'shards:2' is invalid; expected one of: dirichlet:ALPHA, iid, natural, quantity:A",
    ):
        partition("shards:2", [0, 1], None, 1, 0)


def test_argument_to_iid_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'iid' takes no argument"):
        partition("iid:3", [0, 1], None, 1, 0)


def test_more_clients_than_rows_is_a_data_error() -> None:
    with pytest.raises(DataError, match="the training split has 3 rows, fewer than the 4 clients"):
        partition("iid", [0, 1, 0], None, 4, 0)


def test_zero_clients_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="clients is 0; expected at least 1"):
        partition("iid", [0, 1], None, 0, 0)
